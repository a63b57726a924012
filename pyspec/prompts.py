"""The built-in prompts: `pyspec demo`'s prompt and `pyspec bench`'s prompt sets,
and the reader of a bench prompts file (JSONL)."""
from __future__ import annotations

import json
from pathlib import Path

from .errors import InvalidParameterError, PyspecError

# `pyspec demo`'s prompt (copy-heavy: the answer mostly repeats it). It ends with a newline.
DEMO_PROMPT = (
    "def quicksort(arr):\n"
    "    if len(arr) <= 1:\n"
    "        return arr\n"
    "    pivot = arr[len(arr) // 2]\n"
    "    left = [x for x in arr if x < pivot]\n"
    "    middle = [x for x in arr if x == pivot]\n"
    "    right = [x for x in arr if x > pivot]\n"
    "    return quicksort(left) + middle + quicksort(right)\n"
    "\n"
    "# The same function again, with type hints added:\n"
)

PROMPT_SETS = {
    # Copy-heavy: the answer mostly repeats the prompt (n-gram lookup's best case).
    "code-edit": [
        {"name": "quicksort-hints", "prompt": DEMO_PROMPT},  # `pyspec demo`s prompt
        {"name": "rename-field", "prompt": (
            "class Order:\n"
            "    def __init__(self, customer, items, total):\n"
            "        self.customer = customer\n"
            "        self.items = items\n"
            "        self.total = total\n"
            "\n"
            "    def describe(self):\n"
            "        names = ', '.join(item.name for item in self.items)\n"
            "        return f'{self.customer} ordered {names} for {self.total:.2f}'\n"
            "\n"
            "# The same class, with the field `customer` renamed to `buyer`:\n"
            "class Order:\n")},
        {"name": "config-edit", "prompt": (
            "Original config.yaml:\n"
            "server:\n"
            "  host: 0.0.0.0\n"
            "  port: 8080\n"
            "  workers: 4\n"
            "database:\n"
            "  url: postgres://db.internal:5432/app\n"
            "  pool_size: 10\n"
            "logging:\n"
            "  level: info\n"
            "  file: /var/log/app.log\n"
            "\n"
            "The same config.yaml with the port changed to 9090 and the log level set to debug:\n"
            "server:\n")},
    ],
    "code-gen": [
        {"name": "is-prime", "prompt": (
            "def is_prime(n: int) -> bool:\n"
            "    \"\"\"Return True if n is a prime number, False otherwise.\"\"\"\n")},
        {"name": "csv-average", "prompt": (
            "# Read people.csv (columns: name, age, city) and print the average age per city.\n"
            "import csv\n"
            "from collections import defaultdict\n"
            "\n"
            "\n"
            "def main():\n")},
    ],
    "summarise": [
        {"name": "council-article", "prompt": (
            "Article: The city council met on Tuesday to discuss the new bicycle lanes on Main Street. "
            "Residents said the lanes made the street safer for children who ride to school, while shop "
            "owners worried that removing parking spaces would keep customers away. The council voted six "
            "to three to keep the lanes for a trial period of one year and to review the number of visitors "
            "to the shops every three months. The mayor said the city would add new parking spaces on Oak "
            "Street, two blocks away, before the end of the summer.\n\n"
            "Summarise the article above in three sentences, reusing its wording.\nSummary:")},
        {"name": "meeting-notes", "prompt": (
            "Meeting notes, 12 March: The team reviewed the release plan for version 2.4. Maria reported that "
            "the payment service migration is finished and all tests pass. Tom said the mobile app still "
            "crashes on older Android phones when the user opens the settings page, and he expects a fix by "
            "Friday. The team agreed to move the release from 18 March to 25 March so that the fix can be "
            "tested, and to send a short note to customers about the new date.\n\n"
            "Summary of the decisions and action items:\n")},
    ],
    "prose": [
        {"name": "fairy-tale", "prompt":
            "Once upon a time, in a small village at the edge of a great forest, there lived"},
        {"name": "printing-press", "prompt": (
            "The invention of the printing press in the fifteenth century changed Europe in ways that its "
            "inventor could hardly have imagined. Before it,")},
    ],
    # Formatted with the model's chat template.
    "chat": [
        {"name": "explain-hash-table", "messages": [
            {"role": "user", "content": "Explain what a hash table is in three short sentences."}]},
        {"name": "add-docstring", "messages": [
            {"role": "user", "content": (
                "Add a docstring and type hints to this function and show the whole function again:\n\n"
                "def moving_average(values, window):\n"
                "    result = []\n"
                "    for i in range(len(values) - window + 1):\n"
                "        result.append(sum(values[i:i + window]) / window)\n"
                "    return result\n")}]},
    ],
}
PROMPT_SET_NAMES = tuple(PROMPT_SETS) + ("all",)


class PromptFileError(PyspecError):
    """A --prompts-file is missing or malformed."""


def builtin_prompts(sets: str = "all") -> list:
    """The built-in prompt sets (a name, a comma list of names, or "all"): [{"name", "set", "prompt"|"messages"}]."""
    names = list(PROMPT_SETS) if sets == "all" else [s.strip() for s in sets.split(",") if s.strip()]
    out = []
    for s in names:
        if s == "all":
            return builtin_prompts("all")
        if s not in PROMPT_SETS:
            raise InvalidParameterError(f"unknown prompt set {s!r}; expected one of {', '.join(PROMPT_SET_NAMES)}")
        out += [{**p, "set": s} for p in PROMPT_SETS[s]]
    return out


def _check_messages(msgs, where: str) -> list:
    if not isinstance(msgs, list) or not msgs:
        raise PromptFileError(f"{where}: \"messages\" must be a non-empty list of {{\"role\", \"content\"}} objects")
    for i, m in enumerate(msgs):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise PromptFileError(f"{where}: messages[{i}] must be an object with string \"role\" and "
                                  f"\"content\"; got {m!r:.80}")
    return msgs


def load_prompts_file(path) -> list:
    """A JSONL file: one object per line with "prompt" (text) or "messages" (chat), optional "name"."""
    p = Path(path)
    if not p.is_file():
        raise PromptFileError(f"prompts file not found: '{p}'")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise PromptFileError(f"cannot read prompts file '{p}': {e}") from None
    out, names = [], set()
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{p}:{no}"
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise PromptFileError(f"{where}: not valid JSON ({e}); each line must be one JSON object such as "
                                  "{\"name\": \"x\", \"prompt\": \"text\"} or {\"messages\": [...]}") from None
        if not isinstance(obj, dict) or ("prompt" in obj) == ("messages" in obj):
            raise PromptFileError(f"{where}: expected an object with either \"prompt\" (text) or \"messages\" "
                                  "(chat), not both")
        rec = {"set": p.stem}
        if "prompt" in obj:
            if not isinstance(obj["prompt"], str) or not obj["prompt"]:
                raise PromptFileError(f"{where}: \"prompt\" must be a non-empty string")
            rec["prompt"] = obj["prompt"]
        else:
            rec["messages"] = _check_messages(obj["messages"], where)
        name = str(obj.get("name") or f"{p.stem}-{len(out) + 1}")
        base, k = name, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.add(name)
        rec["name"] = name
        out.append(rec)
    if not out:
        raise PromptFileError(f"no prompts in '{p}' (expected one JSON object per line)")
    return out
