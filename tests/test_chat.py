"""chat() / --chat: the GGUF's own chat template, or a clear error for a model
without one (a base model), never a guessed format."""
import subprocess
import sys

import pytest

import pyspec
import tiny_draft_heads

MSGS = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def base_gemma3(model_dir):
    """A gemma3-architecture model without tokenizer.chat_template, as the default model is."""
    return tiny_draft_heads.write_gemma3(model_dir / "chat_gemma3.gguf")


def test_a_model_without_a_template_refuses_to_chat(base_gemma3):
    llm = pyspec.LLM(base_gemma3, n_ctx=256)
    assert not llm.has_chat_template
    for call in (llm.apply_chat_template, llm.chat, llm.chat_stream):
        with pytest.raises(pyspec.InvalidParameterError, match="has no chat template") as e:
            call(MSGS)
        msg = str(e.value)
        assert "base model" in msg and "chat_template=" in msg and "--chat-template" in msg
    # the model is still usable for plain prompts
    assert len(llm.generate("the sort of", max_tokens=4, ignore_eos=True).tokens) == 4


def test_the_engine_refuses_too_without_a_template(base_gemma3):
    """_core.Model used directly: the same refusal, not a template guessed from the architecture."""
    model = pyspec.LLM(base_gemma3, n_ctx=256)._model
    with pytest.raises(pyspec.InvalidParameterError, match="has no chat template.*base model"):
        model.apply_chat_template([("user", "Say hello.")])
    assert model.apply_chat_template([("user", "Say hello.")], True, "gemma").startswith("<start_of_turn>user")


def test_a_template_given_by_name_is_used(base_gemma3):
    llm = pyspec.LLM(base_gemma3, n_ctx=256, chat_template="gemma")
    text = llm.apply_chat_template(MSGS)
    assert text.startswith("<start_of_turn>user\nSay hello.") and text.rstrip().endswith("<start_of_turn>model")
    g = llm.chat(MSGS, max_tokens=4, ignore_eos=True)
    assert g.stats.prompt_n == len(llm.tokenize(text, parse_special=True))
    assert "<|im_start|>user" in pyspec.LLM(base_gemma3, n_ctx=256, chat_template="chatml").apply_chat_template(MSGS)


def test_cli_chat_without_a_template(base_gemma3):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "pyspec", "-m", str(base_gemma3), "-p", "Say hello.", "-n", "4",
                               "-c", "256", "--ignore-eos", *args], capture_output=True, text=True, timeout=120)
    r = cli("--chat")
    assert r.returncode == 2 and "has no chat template" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = cli("--chat", "--chat-template", "gemma", "--json")
    assert r.returncode == 0, r.stderr


@pytest.mark.gemma
def test_the_default_model_is_a_base_model(gemma_path, gemma):
    """README's chat example: the default model has no template and says so."""
    assert pyspec.model_info(gemma_path)["chat_template"] is False
    with pytest.raises(pyspec.InvalidParameterError, match="base model"):
        gemma.chat(MSGS)
