"""A campaign's journal: one SQLite file (WAL) holding the campaign's parameters, each finished
program with its outcome, and each finding with its minimised program.

A program and its findings are written in one transaction when it finishes, so a campaign
killed at any moment (kill -9 included) leaves either all of a program or none of it: resumed,
it skips what finished and runs the rest, and since program i depends only on (seed, i), the
findings are those of a campaign never killed.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict
from pathlib import Path
from types import TracebackType
from typing import Any

from cowlab.check.campaign import Params, Ran, Signature
from cowlab.check.search import Finding, Program

SCHEMA = """
CREATE TABLE IF NOT EXISTS campaign (params TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS programs (
    kernel TEXT NOT NULL, idx INTEGER NOT NULL, letters INTEGER NOT NULL, outcome TEXT NOT NULL,
    PRIMARY KEY (kernel, idx));
CREATE TABLE IF NOT EXISTS findings (
    kernel TEXT NOT NULL, idx INTEGER NOT NULL, prop TEXT NOT NULL, signature TEXT NOT NULL,
    problem TEXT NOT NULL, raw_letters INTEGER NOT NULL,
    program TEXT,  -- JSON {names, steps}; NULL: a lower index had the signature already
    PRIMARY KEY (kernel, idx, signature));
"""


class JournalError(Exception):
    """A journal that cannot serve this campaign."""


class Journal:
    def __init__(self, path: Path, params: Params) -> None:
        try:
            self.db = sqlite3.connect(path)
            self.db.execute("PRAGMA journal_mode=WAL")
            # a commit survives the process's death (kill -9) without an fsync each: only a
            # power loss could take back the last programs, which a resume then runs again
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            raise JournalError(f"journal {path}: {e}") from None
        self._claim(path, params)
        self.params = params
        self.done: set[tuple[str, int]] = set(self.db.execute("SELECT kernel, idx FROM programs"))
        # kernel -> signature -> the lowest index that reported it
        self.first: dict[str, dict[Signature, int]] = {}
        for kernel, idx, sig in self.db.execute("SELECT kernel, idx, signature FROM findings"):
            self._note(kernel, idx, _signature(sig))

    def _claim(self, path: Path, params: Params) -> None:
        """Record the parameters in a new journal; refuse one written by another campaign
        (its programs would not be this one's)."""
        mine = json.dumps(asdict(params))
        row = self.db.execute("SELECT params FROM campaign").fetchone()
        if row is None:
            with self.db:
                self.db.execute("INSERT INTO campaign VALUES (?)", (mine,))
        elif json.loads(row[0]) != json.loads(mine):
            theirs = ", ".join(f"{k} {_words(v)}" for k, v in json.loads(row[0]).items())
            raise JournalError(f"journal {path} holds another campaign ({theirs})")

    def _note(self, kernel: str, idx: int, sig: Signature) -> None:
        first = self.first.setdefault(kernel, {})
        first[sig] = min(idx, first.get(sig, idx))

    def known(self, kernel: str, index: int) -> frozenset[Signature]:
        """Signatures programs before `index` on `kernel` reported: no need to minimise them."""
        return frozenset(s for s, i in self.first.get(kernel, {}).items() if i < index)

    def record(self, ran: Ran) -> None:
        """A finished program and its findings, in one transaction."""
        with self.db:
            self.db.execute(
                "INSERT INTO programs VALUES (?, ?, ?, ?)",
                (ran.kernel, ran.index, ran.letters, ran.outcome),
            )
            for f in ran.found:
                program = None if f.program is None else _program_json(f.program)
                row = (ran.kernel, ran.index, f.prop, json.dumps(f.signature), f.problem)
                self.db.execute(
                    "INSERT INTO findings VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (*row, f.raw_letters, program),
                )
        self.done.add((ran.kernel, ran.index))
        for f in ran.found:
            self._note(ran.kernel, ran.index, f.signature)

    def findings(self, kernels: list[str], programs: int) -> list[Finding]:
        """One finding per kernel and signature met by the first `programs` programs (a
        journal may hold more, of a larger campaign of the same seed): the lowest-indexed
        program's, minimised; by kernel, index, property and signature (an order that no
        schedule changes)."""
        out = []
        for kernel in kernels:
            first = {s: i for s, i in self.first.get(kernel, {}).items() if i < programs}
            for sig in sorted(first, key=lambda s: (first[s], s[0], json.dumps(s))):
                idx = first[sig]
                prop, problem, program = self.db.execute(
                    "SELECT prop, problem, program FROM findings "
                    "WHERE kernel = ? AND idx = ? AND signature = ?",
                    (kernel, idx, json.dumps(sig)),
                ).fetchone()
                origin = (
                    f"campaign seed {self.params.seed}, random program {idx} of "
                    f"{self.params.length + 1} letters, minimised"
                )
                out.append(Finding(kernel, prop, _program(program), problem, sig, origin))
        return out

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _signature(text: str) -> Signature:
    """A signature as signature() builds it (tuples all the way down), from its JSON."""
    sig = _tuples(json.loads(text))
    assert isinstance(sig, tuple)
    return sig


def _tuples(value: object) -> object:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _program_json(program: Program) -> str:
    return json.dumps({"names": program.names, "steps": program.steps})


def _program(text: str) -> Program:
    doc: dict[str, Any] = json.loads(text)
    return Program(tuple(doc["names"]), tuple(doc["steps"]))


def _words(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)
