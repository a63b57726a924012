# GPU exactness check (run_h200.sh step exactcheck). Loads every model before numpy is imported (on the H200 host a model load after `import numpy`
# segfaults in llama_model::print_info; importing pyspec first is not enough under pytest: not diagnosed), then checks
# width invariance and spec == plain. llama64-q8_0 (head size 16: attention runs on the CPU backend, exact too) is in.
import random, sys, os
import pyspec
from pyspec import _core
d = os.environ["PYSPEC_GPU_MODELS"]
names = ["llama256-q8_0", "llama256-q4_0", "llama256-q5_0", "llama256-q4_k_m", "llama256-q6_k", "llama64-q8_0"]
llms = {n: pyspec.LLM(f"{d}/{n}.gguf", n_gpu_layers=-1, n_ctx=1024) for n in names}
fast = pyspec.LLM(f"{d}/llama256-q4_k_m.gguf", n_gpu_layers=-1, n_ctx=1024, kernels="fast")
for bad in ("llama256-f32",):
    try:
        pyspec.LLM(f"{d}/{bad}.gguf", n_gpu_layers=-1, n_ctx=256); print(bad, "LOADED (expected UnsupportedError)")
    except pyspec.UnsupportedError as e:
        print(bad, "UnsupportedError:", str(e)[:300])
import numpy as np
W = list(range(1, 18)) + [24, 32, 64, 65, 66, 100, 200]  # past 65: prompt chunks (patch 0010)
P = "the of and to in is it"
def rows(llm, follow, widths):
    e = llm._engine; out = {}
    for w in widths:
        e.reset(); e.decode(llm.tokenize(P), 64, False); out[w] = e.decode(follow, w)
    return out
for n, llm in list(llms.items()) + [("q4_k_m FAST", fast)]:
    follow = llm.generate(P, max_tokens=200, ignore_eos=True).tokens
    r = rows(llm, follow, W)
    bad = [w for w in W if not np.array_equal(r[w].view(np.uint32), r[1].view(np.uint32))]
    print(f"{n}: exact={llm._engine.exact} widths differing from width 1: {bad or 'none'}")
class Oracle(_core.Drafter):
    def __init__(s, ref, nv): super().__init__(); s.ref, s.nv, s.rng = ref, nv, random.Random(0)
    def begin(s, p): s.n = 0
    def accept(s, k, em): s.n += len(em)
    def draft(s, k):
        d = list(s.ref[s.n:s.n + k])
        if d and s.rng.random() < 1/3: d[s.rng.randrange(len(d))] = s.rng.randrange(3, s.nv)
        return d
for n, llm in list(llms.items()) + [("q4_k_m FAST", fast)]:
    res = []
    for p in ["the of and to", "x y z x y z", "def sort(arr): return"]:
        base = llm.generate(p, max_tokens=128, ignore_eos=True).tokens
        for k in (1, 3, 7, 8, 15):
            g = llm.generate(p, max_tokens=128, ignore_eos=True, spec_type="ngram", draft_n_max=k).tokens
            o = list(llm._engine.generate(llm.tokenize(p), n_predict=128, draft_n_max=k, ignore_eos=True, drafter=Oracle(base, llm.n_vocab))["tokens"])
            res += [g == base, o == base]
    print(f"{n}: spec == plain in {sum(res)}/{len(res)} runs (ngram + noisy oracle, k 1,3,7,8,15, 3 prompts, 128 tokens)")
