"""How a function's code reaches its container.

A function defined in an importable file travels as source: the file itself, or the whole
top-level package it belongs to, zipped and stored once as a content-addressed blob; the
container imports it by name. A function from __main__ (a script run directly, a notebook, a
REPL) or defined inside another function travels by value, pickled with cloudpickle. Modules
installed in site-packages or the standard library are imported by name and not shipped.
"""

import io
import pathlib
import sys
import sysconfig
import zipfile

import cloudpickle

from ..proto import api_pb2

_INSTALLED = tuple(str(pathlib.Path(p).resolve()) for p in {
    sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], sysconfig.get_paths()["stdlib"]})


def describe(raw_f, definition: api_pb2.FunctionDefinition, upload, by_value: bool = False,
             include_source: bool = True) -> None:
    """Fill in where `definition`'s code comes from; `upload(bytes) -> blob_id` stores a zip.

    by_value: pickle the function even if it could be shipped as source (serialized=True).
    include_source=False: its module is not shipped; its image must have it (add_local_python_source).
    """
    module_name = raw_f.__module__
    module = sys.modules.get(module_name)
    file = getattr(module, "__file__", None)
    if module_name == "__main__" and file is not None:
        # A script run directly: its container imports the file by its name, as `ember run`
        # does, so that what the function's code pickles by reference (a function given to a
        # multiprocessing pool, say) is found there too; its `if __name__ == "__main__":` block
        # does not run there.
        module_name = script_module_name(file)
    if by_value or module_name == "__main__" or file is None or "<locals>" in raw_f.__qualname__:
        definition.pickled.CopyFrom(_pickled(raw_f, upload))
        return
    definition.module = module_name
    definition.qualname = raw_f.__qualname__
    path = pathlib.Path(file).resolve()
    if str(path).startswith(_INSTALLED) or not include_source:
        return
    definition.code_blob_id = upload(package_source(path, module_name))


def script_module_name(file: str) -> str:
    """The name a script is imported by in its containers: its file's stem, or "__main__"
    (then its functions travel by value) if that cannot name a module of its own."""
    stem = pathlib.Path(file).stem
    if pathlib.Path(file).suffix != ".py" or not stem.isidentifier() or stem in sys.stdlib_module_names:
        return "__main__"
    return stem


def _pickled(raw_f, upload) -> api_pb2.Payload:
    from .blobs import to_payload
    return to_payload(cloudpickle.dumps(raw_f), upload)


def package_source(path: pathlib.Path, module_name: str) -> bytes:
    """A zip of the module's file, or of its top-level package, laid out for sys.path."""
    depth = module_name.count(".")
    root = path.parent
    for _ in range(depth):
        root = root.parent
    top = module_name.split(".")[0]
    if depth == 0 and path.name != "__init__.py":
        files = [path]
    else:
        files = sorted(p for p in (root / top).rglob("*.py")
                       if "__pycache__" not in p.parts
                       and not any(part.startswith(".") for part in p.relative_to(root).parts))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for f in files:
            # A fixed timestamp: the same source gives the same zip, hence the same blob.
            info = zipfile.ZipInfo(str(f.relative_to(root)), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            z.writestr(info, f.read_bytes())
    return buf.getvalue()
