"""Dockerfiles as Ember's image steps: `Image.from_dockerfile` and `Image.dockerfile_commands`.

Nothing runs Docker: each instruction becomes the step that does the same (RUN -> run_commands,
COPY -> local files, ENV -> env, WORKDIR -> workdir), so Dockerfile images cache and build like
any other. What has no such step (HEALTHCHECK, multi-stage builds, USER, ...) is refused with the
file, line and instruction.
"""

import dataclasses
import glob
import json
import os
import pathlib
import posixpath
import re
import shlex

from . import exception

# Instructions that only describe how Docker runs the image; Ember's containers run its own
# runtime, so these change nothing (ENTRYPOINT is Image.entrypoint: it runs the runtime).
IGNORED = {"CMD", "EXPOSE", "LABEL", "MAINTAINER", "STOPSIGNAL"}
REFUSED = {
    "HEALTHCHECK": "Ember's containers serve inputs, they are not health-checked services",
    "ONBUILD": "nothing builds from Ember's images as a base",
    "VOLUME": "use ember.Volume (volumes={path: volume} on the function)",
    "SHELL": "build commands run with sh -c",
    "USER": "functions run as the container's root (a user namespace keeps it unprivileged on the host)",
}
ARCHIVES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
# FROM lines that mean Ember's own Debian base (which provides Python 3.11 as Ember's runtime needs).
DEBIAN_BASES = re.compile(r"^(docker\.io/)?(library/)?debian:(bookworm|12)(-slim)?(\.\d+)*$")


@dataclasses.dataclass
class Instruction:
    line: int  # where it starts, 1-based
    word: str  # upper case
    rest: str


def parse(text: str) -> list[Instruction]:
    """The instructions, with continuation lines joined and comments dropped."""
    out, pending, start = [], "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):  # a comment inside a continued instruction
            continue
        if not pending:
            start = n
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = (pending + line).strip()
        pending = ""
        if whole:
            word, _, rest = whole.partition(" ")
            out.append(Instruction(start, word.upper(), rest.strip()))
    if pending.strip():
        word, _, rest = pending.strip().partition(" ")
        out.append(Instruction(start, word.upper(), rest.strip()))
    return out


_VAR = re.compile(r"\\\$|\$\{(\w+)(?::([-+])([^}]*))?\}|\$(\w+)")


def substitute(text: str, values: dict[str, str]) -> str:
    """Docker's variable substitution: $VAR, ${VAR}, ${VAR:-default}, ${VAR:+alternative}."""
    def one(m):
        if m.group(0) == "\\$":
            return "$"
        name = m.group(1) or m.group(4)
        value, op, word = values.get(name, ""), m.group(2), m.group(3) or ""
        if op == "-":
            return value or word
        if op == "+":
            return word if value else ""
        return value
    return _VAR.sub(one, text)


def _exec_form(rest: str):
    """The JSON array of an exec-form instruction (RUN ["a", "b"]), or None for the shell form."""
    if rest.startswith("["):
        try:
            words = json.loads(rest)
        except ValueError:
            return None
        if isinstance(words, list) and all(isinstance(w, str) for w in words):
            return words
    return None


class Translator:
    """Turns instructions into calls on an Image, one by one."""

    def __init__(self, source: str, context_dir: pathlib.Path, build_args: dict[str, str], ignore):
        self.source = source              # the file, or "dockerfile_commands", for messages
        self.context_dir = context_dir
        self.build_args = dict(build_args)
        self.ignore = ignore
        self.args: dict[str, str] = {}    # ARGs declared in the stage, with their values
        self.env: dict[str, str] = {}     # ENVs so far (they also substitute)
        self.cwd = "/"                    # Docker's working directory, for relative paths

    def fail(self, ins: Instruction, why: str):
        raise exception.InvalidError(f"{self.source}, line {ins.line}: {ins.word}: {why}")

    def values(self) -> dict[str, str]:
        return {**self.args, **self.env}

    def base(self, ins: Instruction, image_cls):
        """The Image a FROM line starts from."""
        words = substitute(ins.rest, self.args).split()
        if not words or words[0].startswith("--"):
            self.fail(ins, f"{ins.rest!r}: Ember takes FROM IMAGE (no --platform); the platform is the worker's")
        if len(words) not in (1, 3) or (len(words) == 3 and words[1].upper() != "AS"):
            self.fail(ins, f"{ins.rest!r}: expected FROM IMAGE [AS NAME]")
        ref = words[0]
        self.args = {}  # ARGs before FROM are only for FROM lines
        if ref == "scratch":
            self.fail(ins, "an image from scratch has no Python for Ember's runtime: start from debian:bookworm-slim "
                           "or an image with Python 3.11")
        if DEBIAN_BASES.match(ref):
            return image_cls.debian_slim()
        return image_cls.from_registry(ref)

    def apply(self, image, ins: Instruction):
        """The image after one instruction (not FROM)."""
        word, rest = ins.word, ins.rest
        if word in IGNORED:
            return image
        if word in REFUSED:
            self.fail(ins, f"not supported by Ember's images: {REFUSED[word]}")
        if word == "FROM":
            self.fail(ins, "a second FROM: multi-stage builds are not supported by Ember's images; build the "
                           "artifact in RUN steps of one stage, or copy it in with COPY from the context")
        if word == "ARG":
            for item in shlex.split(rest):
                name, eq, default = item.partition("=")
                if not re.fullmatch(r"\w+", name):
                    self.fail(ins, f"{item!r} is not NAME or NAME=DEFAULT")
                value = self.build_args.get(name, substitute(default, self.values()) if eq else None)
                if value is not None:
                    self.args[name] = value
            return image
        if word == "ENV":
            pairs = self._env_pairs(ins)
            self.env.update(pairs)
            return image.env(pairs)
        if word == "WORKDIR":
            path = substitute(rest, self.values()).strip()
            self.cwd = posixpath.normpath(posixpath.join(self.cwd, path))
            return image.workdir(self.cwd)
        if word == "RUN":
            if rest.startswith("--"):
                self.fail(ins, f"{rest.split()[0]}: RUN's flags (--mount, --network, ...) are not supported")
            words = _exec_form(rest)
            command = shlex.join(words) if words is not None else rest
            # Docker gives RUN the stage's ARGs as environment variables (ENVs are in the image's).
            return image.run_commands(command, env=dict(self.args) or None)
        if word in ("COPY", "ADD"):
            return self._copy(image, ins)
        if word == "ENTRYPOINT":
            words = _exec_form(rest)
            if words is None:  # Docker's shell form never runs the command it is given
                self.fail(ins, "the shell form would never run Ember's runtime (Docker gives it no arguments): "
                               'use the exec form, ENTRYPOINT ["/entrypoint.sh"], with a script that ends exec "$@"')
            return image.entrypoint(words)
        self.fail(ins, "not a Dockerfile instruction Ember's images support")

    def _env_pairs(self, ins: Instruction) -> dict[str, str]:
        values = self.values()
        words = shlex.split(ins.rest)
        if words and "=" not in words[0]:  # the old form: ENV NAME VALUE...
            name, _, value = ins.rest.partition(" ")
            return {name: substitute(value.strip(), values)}
        pairs = {}
        for w in words:
            name, eq, value = w.partition("=")
            if not eq or not name:
                self.fail(ins, f"{w!r} is not NAME=VALUE")
            pairs[name] = substitute(value, {**values, **pairs})
        return pairs

    def _copy(self, image, ins: Instruction):
        from .image import _dir_files, _ignored  # image.py imports this module
        words = _exec_form(ins.rest)
        if words is None:
            words = shlex.split(substitute(ins.rest, self.values()))
        flags = [w for w in words if w.startswith("--")]
        if flags:
            self.fail(ins, f"{flags[0]}: not supported (--from: multi-stage builds are not; --chown, --chmod: files "
                           "belong to the container's root)")
        if len(words) < 2:
            self.fail(ins, "expected SOURCE... DESTINATION")
        *sources, dest = words
        # Into the directory dest, as Docker does when it says so ("dir/", ".") or there are several.
        into_dir = dest.endswith(("/", "/.", "/..")) or dest in (".", "..") or len(sources) > 1
        dest = posixpath.normpath(posixpath.join(self.cwd, dest))
        for src in sources:
            if re.match(r"^[a-z]+://", src):
                self.fail(ins, f"{src}: URLs are not fetched: download it in a RUN step (curl, wget)")
            if ins.word == "ADD" and src.endswith(ARCHIVES):
                self.fail(ins, f"{src}: ADD does not unpack archives here: COPY it, then RUN tar -xf")
        context_dir, ignore = self.context_dir, self.ignore

        def files() -> list[tuple[pathlib.Path, str]]:
            """(local file, path in the image without "/"): read when the image is resolved, on
            the caller's machine (a container has the Dockerfile's text but not its context)."""
            pairs = []
            for src in sources:
                matches = sorted(glob.glob(str(context_dir / src.lstrip("/"))))
                if not matches:
                    self.fail(ins, f"{src}: no such file in the context directory {context_dir}")
                for m in matches:
                    local = pathlib.Path(m)
                    in_context = os.path.relpath(local, context_dir)
                    if in_context.startswith(".."):
                        self.fail(ins, f"{src}: outside the context directory {context_dir}")
                    if local.is_dir():  # its contents go into dest; ignore patterns are the context's
                        def ignored(rel, base=in_context):
                            return _ignored(os.path.normpath(os.path.join(base, str(rel))), ignore)
                        ignored.can_prune_directories = getattr(ignore, "can_prune_directories", lambda: True)
                        pairs += [(p, posixpath.join(dest, rel).lstrip("/")) for p, rel in _dir_files(local, ignored)]
                    elif not _ignored(in_context, ignore):
                        target = posixpath.join(dest, local.name) if into_dir or len(matches) > 1 else dest
                        pairs.append((local, target.lstrip("/")))
            return pairs

        return image._add_files(files, f"{ins.word} {' '.join(sources)} {dest}")


def dockerignore(context_dir: pathlib.Path):
    """What the context's .dockerignore leaves out (what Modal ignores by default too)."""
    from .patterns import FilePatternMatcher
    path = context_dir / ".dockerignore"
    return FilePatternMatcher.from_file(path) if path.is_file() else FilePatternMatcher()
