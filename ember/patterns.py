"""ember.FilePatternMatcher: which local files to leave out, with .dockerignore's patterns.

    image.add_local_dir("src", "/root/src", ignore=ember.FilePatternMatcher("**/*.pyc", "!keep.pyc"))
    image.add_local_dir("src", "/root/src", ignore=~ember.FilePatternMatcher("**/*.py"))   # only .py files

A path matches when it, or a directory above it, matches a pattern: `*` is any characters but
"/", `?` one, `**` any number of directories; a pattern starting with "!" takes a match back.
The last pattern that applies wins, as in Docker.
"""

import pathlib
import re
import typing

from . import exception


def _regex(pattern: str) -> re.Pattern:
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):  # "**/": any directories, or none
                out += "(?:.*/)?"
                i += 1
            else:
                out += ".*"
            continue
        out += {"*": "[^/]*", "?": "[^/]"}.get(c) or re.escape(c)
        i += 1
    return re.compile(out + r"\Z")


class FilePatternMatcher:
    def __init__(self, *pattern: str):
        self._source: str | None = None
        self._parsed = self._parse(pattern)

    @classmethod
    def from_file(cls, file_path) -> "FilePatternMatcher":
        """The patterns of a file such as .dockerignore, one a line ("#" starts a comment)."""
        path = pathlib.Path(file_path)
        try:
            lines = path.read_text().splitlines()
        except OSError as e:
            raise exception.InvalidError(f"FilePatternMatcher.from_file({str(file_path)!r}): cannot read it: "
                                         f"{e.strerror}") from None
        matcher = cls(*(line for line in lines if not line.strip().startswith("#")))
        matcher._source = str(path)
        return matcher

    @staticmethod
    def _parse(patterns) -> list[tuple[bool, str, re.Pattern]]:
        parsed = []
        for p in patterns:
            if not isinstance(p, str):
                raise exception.InvalidError(f"FilePatternMatcher({p!r}): patterns are strings")
            p = p.strip()
            exclusion = p.startswith("!")
            p = p.removeprefix("!").strip().strip("/")
            if not p:
                if exclusion:
                    raise exception.InvalidError('FilePatternMatcher: "!" alone is not a pattern')
                continue
            p = re.sub(r"/+", "/", p).removeprefix("./")
            parsed.append((exclusion, p, _regex(p)))
        return parsed

    @property
    def patterns(self) -> list[str]:
        return [("!" if exclusion else "") + p for exclusion, p, _ in self._parsed]

    def __repr__(self):
        return f"FilePatternMatcher({', '.join(map(repr, self.patterns))})"

    def __call__(self, path) -> bool:
        """True if the path (relative, "/" separated) is matched: left out, as an ignore."""
        rel = pathlib.PurePosixPath(str(path)).as_posix().strip("/")
        if rel in ("", "."):
            return False
        parts = rel.split("/")
        candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]  # its directories, then itself
        matched = False
        for exclusion, _, regex in self._parsed:
            if exclusion == matched and any(regex.match(c) for c in candidates):
                matched = not exclusion
        return matched

    def can_prune_directories(self) -> bool:
        """Whether a matched directory can be skipped whole: not when a "!" pattern may take
        back something inside it."""
        return not any(exclusion for exclusion, _, _ in self._parsed)

    def __invert__(self) -> "_Inverted":
        return _Inverted(self)


class _Inverted:
    """~matcher: matches what the matcher does not."""

    def __init__(self, matcher: typing.Callable):
        self._matcher = matcher

    def __call__(self, path) -> bool:
        return not self._matcher(path)

    def __invert__(self):
        return self._matcher

    def can_prune_directories(self) -> bool:
        return False

    def __repr__(self):
        return f"~{self._matcher!r}"
