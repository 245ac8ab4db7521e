"""How much of Modal's public SDK Ember has, by name: Modal's list read from its own source.

    python bench/modal_names.py [--modal-version 1.6.4] [--missing] [--json]

Downloads the pinned `modal` wheel from PyPI (pip download, no dependencies) into a temporary
directory and reads it with `ast`: it is never installed or imported. Modal's public names are
`modal.__all__`, and for each of its classes the public methods and properties of the class
behind it (`App = synchronize_api(_App)`: the methods of `_App`). Each is looked up on `ember`
(`hasattr`), so a name counts when Ember has it at all: whether it works, is accepted with a
note or is refused with a reason is the README's checklist ("Modal's names").
"""

import argparse
import ast
import json
import pathlib
import subprocess
import sys
import tempfile
import zipfile

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

MODAL_VERSION = "1.6.4"


def fetch_source(version: str, dest: pathlib.Path) -> pathlib.Path:
    subprocess.run([sys.executable, "-m", "pip", "download", f"modal=={version}", "--no-deps", "-q", "-d", str(dest)],
                   check=True)
    (wheel,) = dest.glob("modal-*.whl")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(dest / "src")
    return dest / "src" / "modal"


def public_names(package: pathlib.Path) -> list[str]:
    tree = ast.parse((package / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
            return [ast.literal_eval(e) for e in node.value.elts if not ast.literal_eval(e).startswith("__")]
    raise SystemExit("modal/__init__.py has no __all__")


def class_methods(package: pathlib.Path) -> dict[str, set[str]]:
    """Public method and property names of each top-level class, by its public name (`_App`
    and `App` both count as App's; the wrapped private class is where the methods are)."""
    out: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                members = {n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                           and not n.name.startswith("_")}
                out.setdefault(node.name.lstrip("_"), set()).update(members)
    return out


def compare(version: str) -> dict:
    import ember

    with tempfile.TemporaryDirectory() as tmp:
        package = fetch_source(version, pathlib.Path(tmp))
        names = public_names(package)
        methods = class_methods(package)
    report = {"modal_version": version, "names": {}, "methods": {}}
    for name in names:
        report["names"][name] = hasattr(ember, name)
        if name[:1].isupper() and methods.get(name):
            ours = getattr(ember, name, None)
            report["methods"][name] = {m: ours is not None and hasattr(ours, m) for m in sorted(methods[name])}
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modal-version", default=MODAL_VERSION)
    parser.add_argument("--missing", action="store_true", help="list the names Ember lacks")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = compare(args.modal_version)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    have = sum(report["names"].values())
    total_methods = sum(len(m) for m in report["methods"].values())
    have_methods = sum(sum(m.values()) for m in report["methods"].values())
    print(f"modal {report['modal_version']}: Ember has {have} of {len(report['names'])} module names and "
          f"{have_methods} of {total_methods} methods of its classes ({have + have_methods} of "
          f"{len(report['names']) + total_methods} in all)")
    for cls, ms in report["methods"].items():
        line = f"  {cls}: {sum(ms.values())}/{len(ms)}"
        if args.missing:
            line += "  missing: " + ", ".join(m for m, ok in ms.items() if not ok)
        print(line)
    if args.missing:
        print("module names missing:", ", ".join(n for n, ok in report["names"].items() if not ok))


if __name__ == "__main__":
    main()
