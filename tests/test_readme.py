"""Every ```python block in README.md and docs/*.md runs as pasted: on its
own, in a fresh namespace, on the CPU. A block that needs names from another
block, an import it lacks, or a GPU fails here with its text in the message."""
import pathlib
import re
import time
import traceback

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
MIN_BLOCKS = 9        # the docs' python blocks when this test was written
SECONDS_PER_BLOCK = 30.0  # blocks are meant to take well under 10 s; this catches a heavy one
GPU_WORDS = re.compile(r"\.cuda\(|[\"']cuda[\"']|device=\"cuda|torch\.cuda\.")


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, source) of every fenced block opened by exactly ```python."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start, body = i + 1, []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            assert i < len(lines), f"the ```python block at line {start} is not closed"
            blocks.append((start + 1, "\n".join(body) + "\n"))
        i += 1
    return blocks


BLOCKS = [(f"{path.relative_to(ROOT)}:{line}", source) for path in DOCS
          for line, source in python_blocks(path.read_text(encoding="utf-8"))]


def _block_id(index: int) -> str:
    """'3-docs_losses.md:78-criterion_AsymmetricLoss_': the block's index, place and its
    first line that is not an import (every block starts with ``import torch``)."""
    line, source = BLOCKS[index]
    lines = [s.strip() for s in source.splitlines() if s.strip()]
    first = next((s for s in lines if not s.startswith(("import ", "from ", "#"))),
                 lines[0] if lines else "empty")
    where = re.sub(r"[^A-Za-z0-9_.:]+", "_", line)
    return f"{index}-{where}-{re.sub(r'[^A-Za-z0-9_.]+', '_', first)[:40]}"


def test_readme_has_its_python_blocks():
    assert any(where.startswith("README.md") for where, _ in BLOCKS), "no block in README.md"
    assert len(BLOCKS) >= MIN_BLOCKS, (
        f"the docs have {len(BLOCKS)} ```python blocks, expected at least {MIN_BLOCKS}; "
        f"lower MIN_BLOCKS only if blocks were removed on purpose")


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=_block_id)
def test_readme_block_runs(index):
    line, source = BLOCKS[index]
    shown = f"{line} block:\n{source}"
    assert not GPU_WORDS.search(source), (
        f"{shown}\nneeds a GPU; make it CPU-only or fence it as ```text / ```bash")
    namespace = {"__name__": "__readme__"}
    start = time.perf_counter()
    try:
        exec(compile(source, line, "exec"), namespace)
    except Exception:  # noqa: BLE001 - any error fails with the block's text
        pytest.fail(f"{shown}\nraised:\n{traceback.format_exc()}", pytrace=False)
    elapsed = time.perf_counter() - start
    assert elapsed < SECONDS_PER_BLOCK, f"{shown}\ntook {elapsed:.1f} s"
