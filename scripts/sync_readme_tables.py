"""Copy generated tables from results/ into README.md between table markers.

A block ``<!-- table: results/NAME.md -->`` ... ``<!-- /table -->`` in the README is replaced
by that file's table (its provenance comment dropped), so the README never holds typed numbers.
Run after ``scripts/make_tables.sh``.
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- table: (?P<path>[^ ]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


def body(path: str) -> str:
    text = (ROOT / path).read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if not ln.startswith("<!-- generated")]
    return "\n".join(lines).strip("\n") + "\n"


def main() -> int:
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    missing = [m["path"] for m in BLOCK.finditer(text) if not (ROOT / m["path"]).is_file()]
    if missing:
        print(f"missing table files: {', '.join(missing)}", file=sys.stderr)
        return 1
    new = BLOCK.sub(lambda m: m.group(1) + body(m["path"]) + m.group(4), text)
    readme.write_text(new, encoding="utf-8")
    print(f"{len(BLOCK.findall(text))} tables synced")
    return 0


if __name__ == "__main__":
    sys.exit(main())
