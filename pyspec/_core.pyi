# Generated from the built extension with pybind11-stubgen (pybind11-stubgen pyspec._core); regenerate after changing csrc/bindings.
"""
pyspec's C++ engine (private; use the pyspec package)
"""
from __future__ import annotations
import collections.abc
import numpy
import numpy.typing
import typing
__all__: list[str] = ['BatchEngine', 'DFlashDrafter', 'DraftModelDrafter', 'Drafter', 'Eagle3Drafter', 'Engine', 'FeatureDrafter', 'Model', 'MtpDrafter', 'NgramDrafter', 'acceptance_probability', 'build_info', 'check_head_compatible', 'check_vocab_compatible', 'model_info', 'ngram_lookup', 'quantize', 'rejection_counts', 'rejection_exact', 'rejection_step', 'residual_distribution', 'sample_token', 'sampling_distribution', 'set_verbose', 'verify_accept_if_equal', 'verify_rejection']
class Model:
    """
            A GGUF model loaded by llama.cpp (weights only; contexts live in Engine).
    
            Arguments:
              path: the GGUF file.
              n_gpu_layers: layers to offload to a GPU (-1: all).
              repack: allow weight repacking (faster, not batch-invariant).
              use_mmap: map the file instead of reading it.
              load_mtp: also load the MTP ("nextn") layers, for the mtp drafter.
              no_alloc: metadata only, allocations simulated: contexts made on it
                report their memory (Engine.memory) but cannot run.
        
    """
    def __init__(self, path: str, n_gpu_layers: typing.SupportsInt | typing.SupportsIndex = 0, repack: bool = False, use_mmap: bool = True, load_mtp: bool = False, no_alloc: bool = False, rpc: collections.abc.Sequence[str] = []) -> None:
        ...
    def apply_chat_template(self, messages: collections.abc.Sequence[tuple[str, str]], add_assistant: bool = True, template: str = '') -> str:
        """
        Formats [(role, content), ...] with a chat template (default: the GGUF's own).
        """
    def detokenize(self, tokens: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], special: bool = False) -> bytes:
        """
        Token ids to bytes.
        """
    def is_eog(self, token: typing.SupportsInt | typing.SupportsIndex) -> bool:
        """
        True for end-of-generation tokens.
        """
    def meta(self, key: str) -> str:
        """
        A metadata value as text, '' when absent.
        """
    def token_to_bytes(self, token: typing.SupportsInt | typing.SupportsIndex, special: bool = False) -> bytes:
        """
        The bytes of one token (may be a partial UTF-8 character).
        """
    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """
        Text to token ids.
        """
    @property
    def arch(self) -> str:
        ...
    @property
    def n_ctx_train(self) -> int:
        ...
    @property
    def n_embd(self) -> int:
        ...
    @property
    def n_layer(self) -> int:
        ...
    @property
    def n_layer_nextn(self) -> int:
        """
        MTP layers loaded (0 unless loaded with load_mtp=True)
        """
    @property
    def n_vocab(self) -> int:
        ...
    @property
    def path(self) -> str:
        ...
    @property
    def repack(self) -> bool:
        ...
    @property
    def size_bytes(self) -> int:
        """
        Bytes of the loaded weights.
        """
class Drafter:
    """
            Base class of the engine's drafters. Subclass it in Python to write a
            drafter: define begin(prompt), draft(n_max) -> list[int] and
            accept(n_accepted, emitted), and call Drafter.__init__(self).
        
    """
    def __init__(self) -> None:
        ...
    def accept(self, n_accepted: typing.SupportsInt | typing.SupportsIndex, emitted: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex]) -> None:
        ...
    def begin(self, prompt: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex]) -> None:
        ...
    def draft(self, n_max: typing.SupportsInt | typing.SupportsIndex) -> list[int]:
        ...
    @property
    def name(self) -> str:
        ...
class NgramDrafter(Drafter):
    """
            Prompt-lookup drafter: proposes the tokens that followed the latest
            earlier occurrence of the last `n` tokens (then n-1, ..., n_min).
        
    """
    def __init__(self, n: typing.SupportsInt | typing.SupportsIndex = 3, n_min: typing.SupportsInt | typing.SupportsIndex = 3, adaptive: bool = True) -> None:
        ...
class DraftModelDrafter(Drafter):
    """
            Drafts with a separate GGUF model sharing the target's vocabulary
            (checked: VocabMismatchError names the first difference).
        
    """
    def __init__(self, draft: Model, target: Model, n_ctx: typing.SupportsInt | typing.SupportsIndex = 4096, n_threads: typing.SupportsInt | typing.SupportsIndex = 0, p_min: typing.SupportsFloat | typing.SupportsIndex = 0.0, exact: bool = True, flash_attn: typing.SupportsInt | typing.SupportsIndex = -1, type_k: str = 'f16', type_v: str = 'f16') -> None:
        ...
    def memory(self) -> dict:
        """
        Bytes of the draft model's context (its weights are the Model's).
        """
    @property
    def n_threads(self) -> int:
        """
        The CPU threads of the drafter's context.
        """
class FeatureDrafter(Drafter):
    """
            Base of the drafters that read the target's hidden states (mtp,
            eagle3, dflash). They are bound to one Engine (its context captures
            the features they read) and run a second llama.cpp context.
        
    """
    def memory(self) -> dict:
        """
        Bytes the drafter holds beyond its weights: its KV cache and host feature buffers.
        """
    @property
    def engine(self) -> ...:
        ...
class MtpDrafter(FeatureDrafter):
    """
            Drafts with the target's own MTP (next-token-prediction) layers; the
            engine's Model must be loaded with load_mtp=True.
        
    """
    def __init__(self, engine: ..., n_threads: typing.SupportsInt | typing.SupportsIndex = 0, p_min: typing.SupportsFloat | typing.SupportsIndex = 0.0, flash_attn: typing.SupportsInt | typing.SupportsIndex = -1) -> None:
        ...
class Eagle3Drafter(FeatureDrafter):
    """
            Drafts with an EAGLE-3 head (GGUF architecture eagle3) built for the
            engine's target; DraftMismatchError / VocabMismatchError otherwise.
        
    """
    def __init__(self, engine: ..., head: Model, n_threads: typing.SupportsInt | typing.SupportsIndex = 0, p_min: typing.SupportsFloat | typing.SupportsIndex = 0.0, flash_attn: typing.SupportsInt | typing.SupportsIndex = -1) -> None:
        ...
class DFlashDrafter(FeatureDrafter):
    """
            Drafts a block per forward with a DFlash drafter (GGUF architecture
            dflash) built for the engine's target; its memory keeps the features
            of the last `window` target positions (0: the whole context).
        
    """
    def __init__(self, engine: ..., drafter: Model, n_threads: typing.SupportsInt | typing.SupportsIndex = 0, p_min: typing.SupportsFloat | typing.SupportsIndex = 0.0, flash_attn: typing.SupportsInt | typing.SupportsIndex = -1, window: typing.SupportsInt | typing.SupportsIndex = 0, all_outputs: bool = False) -> None:
        """
        all_outputs: read the block through every row up to the last one used (a check of the row mapping; slower)
        """
    @property
    def block_size(self) -> int:
        ...
    @property
    def window(self) -> int:
        ...
class BatchEngine:
    """
            Several sequences (llama.cpp seq_ids 0..n_seq_max-1) in one target context: each step() is one
            llama_decode over every active sequence's next prompt chunk or its last token + drafts; each
            sequence verifies its own rows and rolls back its own memory. Requests join (add) and leave
            (finish, cancel) between steps. Each sequence has a KV stream of its own of n_ctx / n_seq_max
            cells (n_ctx_seq), so that with exact kernels its tokens and logits equal the same request run
            alone by Engine (with n_ctx=n_ctx_seq), whatever runs beside it. Not thread-safe but for
            cancel(); pyspec.batch.BatchLLM drives one from a thread of its own.
    
            Arguments:
              model: the target pyspec._core.Model.
              n_seq_max: sequences at once (1..64).
              n_ctx: context size in tokens, split between the sequences.
              n_batch: tokens of one step over all sequences (prompt chunks and verify rows); >= n_seq_max.
              n_threads, flash_attn, type_k, type_v, exact, swa_full: as Engine's.
              n_step_tokens: tokens per step (0: n_batch).
              pad_rows: pad every sequence's rows in a step to the same count (and idle slots below the
                highest busy one with filler rows), so that llama.cpp runs the step as one pass over the
                KV streams instead of one per distinct row count; the padding has no logits. -1: when
                the model is on a GPU (on the CPU padding measured slower than the split), 0 off, 1 on.
    
            Example:
              >>> be = pyspec._core.BatchEngine(model, n_seq_max=4)
              >>> a = be.add(prompt_a, max_tokens=16); b = be.add(prompt_b, max_tokens=16)
              >>> while be.n_active: events = be.step()
              >>> be.take(a)["tokens"]
        
    """
    def __init__(self, model: Model, n_seq_max: typing.SupportsInt | typing.SupportsIndex = 4, n_ctx: typing.SupportsInt | typing.SupportsIndex = 4096, n_batch: typing.SupportsInt | typing.SupportsIndex = 512, n_threads: typing.SupportsInt | typing.SupportsIndex = 0, flash_attn: typing.SupportsInt | typing.SupportsIndex = -1, type_k: str = 'f16', type_v: str = 'f16', exact: bool = True, n_step_tokens: typing.SupportsInt | typing.SupportsIndex = 0, pad_rows: typing.SupportsInt | typing.SupportsIndex = -1, swa_full: bool = False) -> None:
        ...
    def add(self, prompt: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], options: typing.Any = None, *, drafter: Drafter = None, record_logits: bool = False, **kwargs) -> int:
        """
                Puts a request into a free slot; it starts at the next step(). Returns its id.
        
                Arguments:
                  prompt: token ids.
                  options: a pyspec.GenerationOptions (None: its defaults), read as Engine.generate does.
                  drafter: None (plain decoding) or a fresh pyspec._core.NgramDrafter for this request alone;
                    other drafters raise InvalidParameterError (they hold one sequence's state).
                  record_logits: keep the logits row each committed token was chosen from (tests):
                    recorded_logits(id) once it has finished.
                  **changes: GenerationOptions fields over `options`; n_predict is max_tokens.
        
                Raises PyspecError when no slot is free (n_free == 0), ContextOverflowError for a prompt of
                n_ctx_seq tokens or more.
        """
    def cancel(self, id: typing.SupportsInt | typing.SupportsIndex) -> None:
        """
        Stops sequence `id` at the start of the next step (finish_reason 'interrupted'); thread-safe.
        """
    def memory(self) -> dict:
        """
        Bytes of the batch context: KV cache (every sequence's stream) and compute buffers.
        """
    def recorded_logits(self, id: typing.SupportsInt | typing.SupportsIndex) -> numpy.typing.NDArray[numpy.float32]:
        """
        [n_tokens, n_vocab]: the row each committed token of a finished sequence added with record_logits=True was chosen from (call before take()).
        """
    def step(self) -> list:
        """
                One forward pass over every active sequence. Returns [(id, tokens, n_from_draft, finished,
                finish_reason)] for each sequence that committed tokens or ended in it (the first n_from_draft
                tokens are accepted drafts). An empty list when nothing is active.
        """
    def take(self, id: typing.SupportsInt | typing.SupportsIndex) -> dict:
        """
        The result of a finished sequence, as Engine.generate's dict plus 'in_prompt' (cancelled before its first token); the id is forgotten.
        """
    @property
    def model(self) -> Model:
        ...
    @property
    def n_active(self) -> int:
        """
        Sequences in the batch (prefilling or decoding).
        """
    @property
    def n_ctx_seq(self) -> int:
        """
        The context of one sequence: n_ctx / n_seq_max, rounded up to 256 by llama.cpp.
        """
    @property
    def n_free(self) -> int:
        """
        Slots free for add().
        """
    @property
    def device_argmax_available(self) -> bool:
        """
        Whether greedy sequences without penalties take their argmax on the device (an offloaded model; PYSPEC_DEVICE_ARGMAX=0: off, =1: on, also on the CPU backend).
        """
    @property
    def device_rows_with_host_logits(self) -> int:
        """
        Device picks (the first after each sampler attach) whose logits row was copied to the host anyway (0: only the token ids of greedy rows leave the device).
        """
    @property
    def n_pad_rows(self) -> int:
        """
        Padding and filler rows added so far.
        """
    @property
    def n_seq_max(self) -> int:
        ...
    @property
    def n_step_tokens(self) -> int:
        ...
    @property
    def n_steps(self) -> int:
        """
        Steps (forward passes) run so far.
        """
    @property
    def n_threads(self) -> int:
        ...
    @property
    def pad_rows(self) -> bool:
        """
        Whether steps pad the sequences' rows.
        """
class Engine:
    """
            A target context (KV cache) and the speculative decode loop.
    
            Arguments:
              model: the target pyspec._core.Model.
              n_ctx: context size in tokens.
              n_batch: prompt tokens per forward pass.
              n_threads: CPU threads (0: default_threads(): $PYSPEC_THREADS, else the physical cores of this
                process's CPU mask).
              flash_attn: -1 auto, 0 off, 1 on (exact mode forces its own choice).
              type_k, type_v: KV cache types ("f16", "q8_0", ...).
              exact: batch-invariant kernels (lossless speculation); False is faster and not exact.
              n_rs_seq: recurrent-state snapshots for rolling back hybrid targets (-1: 16 for those, else 0).
              swa_full: sliding-window layers keep every position (llama.cpp's swa_full); False (default):
                a ring of n_swa + n_batch cells per such layer, exact too (patches/0007).
        
    """
    def __init__(self, model: Model, n_ctx: typing.SupportsInt | typing.SupportsIndex = 4096, n_batch: typing.SupportsInt | typing.SupportsIndex = 512, n_threads: typing.SupportsInt | typing.SupportsIndex = 0, flash_attn: typing.SupportsInt | typing.SupportsIndex = -1, type_k: str = 'f16', type_v: str = 'f16', exact: bool = True, n_rs_seq: typing.SupportsInt | typing.SupportsIndex = -1, swa_full: bool = False) -> None:
        ...
    reuse_prefix: bool
    def set_n_threads(self, n_threads: typing.SupportsInt | typing.SupportsIndex) -> None:
        """
        Sets the CPU threads of the target context for the next forward passes.
        """
    @property
    def n_prompt_reused(self) -> int:
        """
        Prompt tokens the last generate() kept from the memory (reuse_prefix).
        """
    def decode(self, tokens: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], chunk: typing.SupportsInt | typing.SupportsIndex = 512, all_logits: bool = True) -> numpy.typing.NDArray[numpy.float32]:
        """
        Appends tokens to the memory in forward passes of at most `chunk` tokens; returns their logits.
        """
    def device_argmax_available(self) -> bool:
        """
        Whether greedy generations take the argmax on the GPU (offloaded model; PYSPEC_DEVICE_ARGMAX=0: off, =1: on, also on the CPU backend).
        """
    def forward(self, tokens: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], argmax: bool = False) -> typing.Any:
        """
        One synchronized forward pass with logits for every token (timing: the verify step's cost). argmax=False: every logits row is copied to the host, returns None; argmax=True: returns each row's greedy pick, taken as a greedy verify takes it (on the device where it can).
        """
    def generate(self, prompt: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], options: typing.Any = None, *, drafter: Drafter = None, on_step: collections.abc.Callable | None = None, on_prompt: collections.abc.Callable | None = None, **kwargs) -> dict:
        """
        Generates from prompt token ids; returns {'tokens', 'stats', 'finish_reason'}.
        
        Arguments:
          prompt: token ids.
          options: a pyspec.GenerationOptions (None: its defaults); the engine reads its
            sampling, draft-length and stop fields (spec_type, ngram_*, add_special and
            parse_special are LLM's: which drafter, how text is tokenized). seed None is 0.
          drafter: a pyspec._core drafter (None: plain decoding).
          on_step: called with (tokens, n_from_draft) after every step; False stops.
          on_prompt: called with (prompt tokens done, prompt tokens) after every prompt chunk
            (n_batch tokens; a reused prefix counts as done).
          **changes: GenerationOptions fields over `options`; n_predict is max_tokens.
        
        Example:
          >>> engine.generate(tokens, pyspec.GenerationOptions(max_tokens=32), drafter=d)
          >>> engine.generate(tokens, n_predict=32, draft_n_max=4, ignore_eos=True, drafter=d)
        """
    def interrupt(self) -> None:
        """
        Asks the running generate() (in another thread) to stop at its next step or prompt chunk: it returns with finish_reason 'interrupted', or raises GenerationInterrupted while still in the prompt. Each generate() drops an earlier request.
        """
    def layer_inputs(self, tokens: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], layers: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], chunk: typing.SupportsInt | typing.SupportsIndex = 0) -> numpy.typing.NDArray[numpy.float32]:
        """
        Appends tokens to the memory like decode() and returns the inputs of the target layers `layers` (layer-input ids: 0 = the token embeddings, k = the output of layer k - 1) for every token, in forward passes of `chunk` tokens (0: the batch size): float32 [n_tokens, len(layers), n_embd]. The features DFlash / EAGLE-3 drafters read.
        """
    def memory(self) -> dict:
        """
        Bytes of the target context: KV cache (recurrent state included) and compute buffers.
        """
    def memory_by_buffer(self) -> list[dict]:
        """
        llama.cpp's breakdown of the target context by buffer type (one per device, plus host buffers): the target's weights (model), KV cache and recurrent state (context) and compute buffers, in bytes; simulated on a no_alloc model. memory() sums the last two.
        """
    def reset(self) -> None:
        """
        Clears the memory.
        """
    def rollback(self, n_keep: typing.SupportsInt | typing.SupportsIndex) -> None:
        """
        Keeps the first n_keep positions of the memory.
        """
    @property
    def exact(self) -> bool:
        ...
    @property
    def force_checkpoints(self) -> bool:
        """
        Roll back via state checkpoints even where positions could be dropped (testing).
        """
    @force_checkpoints.setter
    def force_checkpoints(self, arg0: bool) -> None:
        ...
    @property
    def model(self) -> Model:
        ...
    @property
    def n_ctx(self) -> int:
        ...
    @property
    def n_past(self) -> int:
        ...
    @property
    def n_threads(self) -> int:
        """
        The CPU threads of the target context.
        """
def acceptance_probability(p: typing.Annotated[numpy.typing.ArrayLike, numpy.float64], x: typing.SupportsInt | typing.SupportsIndex, q: typing.Annotated[numpy.typing.ArrayLike, numpy.float64] | None = None) -> float:
    """
    min(1, p(x)/q(x)) (q None: one-hot at x).
    """
def default_threads() -> int:
    """
    The CPU threads a context uses when n_threads is 0 (pyspec.default_threads): $PYSPEC_THREADS
    (InvalidParameterError unless a whole number >= 1), else the physical cores among the CPUs
    this process may run on (its affinity mask); hyperthreads of one core count once.
    """
def build_info() -> dict:
    """
    Build facts: llama.cpp commit, compiled backends, CPU features.
    """
def check_head_compatible(target: Model, draft: Model) -> None:
    """
    Raises DraftMismatchError / VocabMismatchError unless `draft` (eagle3 or dflash) was built for `target`.
    """
def check_vocab_compatible(target: Model, draft: Model) -> None:
    """
    Raises VocabMismatchError when `draft` cannot draft for `target`.
    """
def model_info(path: str) -> list[tuple[str, str]]:
    """
    Reads a GGUF's metadata without loading its weights: [(key, value), ...].
    """
def ngram_lookup(history: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], n: typing.SupportsInt | typing.SupportsIndex = 3, n_min: typing.SupportsInt | typing.SupportsIndex = 1, n_max: typing.SupportsInt | typing.SupportsIndex = 16) -> list[int]:
    """
    The n-gram drafter's proposal for `history`.
    """
def rpc_probe(endpoint: str) -> int:
    """
    Asks the RPC server at HOST:PORT who it is, never aborting: -1 nothing reachable, -2 not an RPC server of this protocol, 0 a server with the fast kernels, 1 one with exact (batch-invariant) kernels.
    """
def rpc_serve(endpoint: str, n_threads: typing.SupportsInt | typing.SupportsIndex, exact: bool = True, cpu_only: bool = False, cache_dir: str = '') -> None:
    """
    Serves this process's devices (GPUs, else the CPU) to llama.cpp RPC clients at HOST:PORT until the process ends (pyspec rpc-server); raises when it cannot start.
    """
def quantize(src: str, dst: str, type: str, n_threads: typing.SupportsInt | typing.SupportsIndex = 0) -> None:
    """
    Writes dst: src quantized (or requantized) to `type` with llama.cpp's quantizer.
    """
def rejection_counts(p0: typing.Annotated[numpy.typing.ArrayLike, numpy.float64], P: typing.Annotated[numpy.typing.ArrayLike, numpy.float64], q0: typing.Annotated[numpy.typing.ArrayLike, numpy.float64], Q: typing.Annotated[numpy.typing.ArrayLike, numpy.float64], draft_n: typing.SupportsInt | typing.SupportsIndex = 2, n_tokens: typing.SupportsInt | typing.SupportsIndex = 2, n_runs: typing.SupportsInt | typing.SupportsIndex = 200000, seed0: typing.SupportsInt | typing.SupportsIndex = 0, draft_onehot: bool = False, wrong: bool = False) -> numpy.typing.NDArray[numpy.int64]:
    """
    Like rejection_exact, but counts over n_runs runs with seeds seed0, seed0 + 1, ...
    """
def rejection_exact(p0: typing.Annotated[numpy.typing.ArrayLike, numpy.float64], P: typing.Annotated[numpy.typing.ArrayLike, numpy.float64], q0: typing.Annotated[numpy.typing.ArrayLike, numpy.float64], Q: typing.Annotated[numpy.typing.ArrayLike, numpy.float64], draft_n: typing.SupportsInt | typing.SupportsIndex = 2, n_tokens: typing.SupportsInt | typing.SupportsIndex = 2, draft_onehot: bool = False, wrong: bool = False) -> numpy.typing.NDArray[numpy.float64]:
    """
    Exact distribution [V]*n_tokens of the first tokens emitted by speculative sampling, target a Markov chain (p0, P), drafter another (q0, Q). draft_onehot: the drafter proposes argmax q without q; wrong: the negative control (resample from p, not the residual).
    """
def rejection_step(p: typing.Annotated[numpy.typing.ArrayLike, numpy.float64], x: typing.SupportsInt | typing.SupportsIndex, q: typing.Annotated[numpy.typing.ArrayLike, numpy.float64] | None = None, seed: typing.SupportsInt | typing.SupportsIndex = 0, pos: typing.SupportsInt | typing.SupportsIndex = 0) -> tuple[bool, int]:
    """
    One accept/resample decision: (accepted, token).
    """
def residual_distribution(p: typing.Annotated[numpy.typing.ArrayLike, numpy.float64], q: typing.Annotated[numpy.typing.ArrayLike, numpy.float64] | None = None, x: typing.SupportsInt | typing.SupportsIndex = -1) -> numpy.typing.NDArray[numpy.float64]:
    """
    norm(max(0, p - q)) as a dense vector (q None: one-hot at x; p when the residual has no mass).
    """
def sample_token(logits: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], temperature: typing.SupportsFloat | typing.SupportsIndex = 0.0, top_k: typing.SupportsInt | typing.SupportsIndex = 40, top_p: typing.SupportsFloat | typing.SupportsIndex = 0.949999988079071, min_p: typing.SupportsFloat | typing.SupportsIndex = 0.05000000074505806, seed: typing.SupportsInt | typing.SupportsIndex = 0, repeat_penalty: typing.SupportsFloat | typing.SupportsIndex = 1.0, frequency_penalty: typing.SupportsFloat | typing.SupportsIndex = 0.0, presence_penalty: typing.SupportsFloat | typing.SupportsIndex = 0.0, penalty_last_n: typing.SupportsInt | typing.SupportsIndex = 64, pos: typing.SupportsInt | typing.SupportsIndex = 0, context: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex] = []) -> int:
    """
    The token the engine samples at absolute position `pos` from one row of logits; `context`: the tokens before it (what the penalties read).
    """
def sampling_distribution(logits: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], temperature: typing.SupportsFloat | typing.SupportsIndex = 0.0, top_k: typing.SupportsInt | typing.SupportsIndex = 40, top_p: typing.SupportsFloat | typing.SupportsIndex = 0.949999988079071, min_p: typing.SupportsFloat | typing.SupportsIndex = 0.05000000074505806, seed: typing.SupportsInt | typing.SupportsIndex = 0, repeat_penalty: typing.SupportsFloat | typing.SupportsIndex = 1.0, frequency_penalty: typing.SupportsFloat | typing.SupportsIndex = 0.0, presence_penalty: typing.SupportsFloat | typing.SupportsIndex = 0.0, penalty_last_n: typing.SupportsInt | typing.SupportsIndex = 64, context: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex] = []) -> tuple[list[int], list[float]]:
    """
    (token ids, probabilities) of the penalized, truncated, tempered distribution.
    """
def set_verbose(verbose: bool) -> None:
    """
    Echo llama.cpp's log to stderr.
    """
def device_argmax_counts() -> dict:
    """
    Device greedy picks in this process: argmax ops built into graphs ('ops') and the rows they picked ('rows'); the rows of one graph share one op.
    """
def verify_accept_if_equal(logits: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], draft: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], temperature: typing.SupportsFloat | typing.SupportsIndex = 0.0, top_k: typing.SupportsInt | typing.SupportsIndex = 40, top_p: typing.SupportsFloat | typing.SupportsIndex = 0.949999988079071, min_p: typing.SupportsFloat | typing.SupportsIndex = 0.05000000074505806, seed: typing.SupportsInt | typing.SupportsIndex = 0, repeat_penalty: typing.SupportsFloat | typing.SupportsIndex = 1.0, frequency_penalty: typing.SupportsFloat | typing.SupportsIndex = 0.0, presence_penalty: typing.SupportsFloat | typing.SupportsIndex = 0.0, penalty_last_n: typing.SupportsInt | typing.SupportsIndex = 64, pos0: typing.SupportsInt | typing.SupportsIndex = 0, history: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex] = []) -> tuple[int, list[int]]:
    """
    Accept-if-equal: (n_accepted, accepted drafts + bonus token). history: the committed tokens.
    """
def verify_rejection(logits: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], draft: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], q: collections.abc.Sequence[tuple[collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], collections.abc.Sequence[typing.SupportsFloat | typing.SupportsIndex]] | None] | None = None, temperature: typing.SupportsFloat | typing.SupportsIndex = 0.0, top_k: typing.SupportsInt | typing.SupportsIndex = 40, top_p: typing.SupportsFloat | typing.SupportsIndex = 0.949999988079071, min_p: typing.SupportsFloat | typing.SupportsIndex = 0.05000000074505806, seed: typing.SupportsInt | typing.SupportsIndex = 0, repeat_penalty: typing.SupportsFloat | typing.SupportsIndex = 1.0, frequency_penalty: typing.SupportsFloat | typing.SupportsIndex = 0.0, presence_penalty: typing.SupportsFloat | typing.SupportsIndex = 0.0, penalty_last_n: typing.SupportsInt | typing.SupportsIndex = 64, pos0: typing.SupportsInt | typing.SupportsIndex = 0, history: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex] = []) -> tuple[int, list[int]]:
    """
    Rejection sampling: (n_accepted, accepted drafts + resampled/bonus token). q: per draft token (ids, probs) of the drafter's distribution, or None (one-hot).
    """
