"""One error value for every kind of failure: what went wrong (cause), what to do (fix), what was seen.

Stages fail with a ``Check`` (its cause, fix and evidence); the credentials, the lock and cluster access
raise a ``Failure`` — each carries a ``Problem``, so both faces show the same failure with the same fix
(the headless commands print it as one line, the wizard as the stage's failed check).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    cause: str
    fix: str = ""
    evidence: dict | str = ""

    def line(self) -> str:
        """One line: the cause, then the fix unless the cause already says it."""
        return self.cause if not self.fix or self.fix in self.cause else f"{self.cause}; {self.fix}"


class Failure(Exception):
    """An exception that is a Problem: ``str(e)`` is the cause (as every raise site words it); ``fix`` is the
    raise site's, else the class's (what to do about this kind of failure, the same in both faces)."""

    fix = ""

    def __init__(self, cause: str = "", fix: str | None = None, evidence: dict | str = ""):
        super().__init__(cause)
        self._fix = fix
        self.evidence = evidence

    @property
    def problem(self) -> Problem:
        return Problem(str(self), self._fix if self._fix is not None else type(self).fix, self.evidence)
