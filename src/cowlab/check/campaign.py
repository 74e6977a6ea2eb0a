"""Random deep campaigns: long random programs of the search's alphabet at full 512-subpage
fidelity, each failure minimised by delta debugging and deduplicated by signature.

Program i of a campaign is drawn from its own generator, seeded by (seed, i), letter by letter
from what the alphabet offers in the state the program has reached; so a program, its findings
and their minimised forms depend on nothing but the campaign's parameters and i, and a campaign
gives the same findings on one core, on many, on a Dask cluster, or killed and resumed
(journal.py keeps what finished). Of two programs whose findings share a signature, the lower
index is the one kept: that too is independent of which finished first.
"""

from __future__ import annotations

import random
import re
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cowlab.check.alphabet import Letter, letters, roots, to_step
from cowlab.check.patch import Patch, register
from cowlab.check.properties import PROPERTIES
from cowlab.check.report import progress
from cowlab.check.search import SCENARIO, Finding, Program, signature, violations
from cowlab.scenario.runner import Runner

if TYPE_CHECKING:
    from cowlab.check.cli import CheckResult
    from cowlab.check.journal import Journal

DEFAULT_LENGTH = 30
Signature = tuple[object, ...]


@dataclass(frozen=True)
class Params:
    """What defines a campaign's programs and their verdicts (not how many it runs)."""

    seed: int
    length: int  # letters after the first (the root)
    alphabet: str
    props: tuple[str, ...]


@dataclass(frozen=True)
class Move:
    """A letter a program took, by name, and the names of what it created (a child, a pin) in
    that program's numbering, so a shorter program can rename what later letters refer to."""

    name: str
    made: tuple[str, ...] = ()


@dataclass(frozen=True)
class Found:
    """A finding of one program, minimised (program None: a lower-indexed program of the
    kernel met its signature, so it was not minimised again)."""

    prop: str
    signature: Signature
    problem: str
    raw_letters: int  # the letters the random program ran up to the violation
    program: Program | None


@dataclass(frozen=True)
class Played:
    """Program `index` of a campaign, run on `kernel` for `letters` letters."""

    kernel: str
    index: int
    letters: int


@dataclass(frozen=True)
class Ran(Played):
    """A program as the journal records it: its findings minimised."""

    found: tuple[Found, ...]

    @property
    def outcome(self) -> str:
        broken = sorted({f.prop for f in self.found})
        return f"{self.letters} letters" + (f", broke {', '.join(broken)}" if broken else "")


class Play:
    """A program being run letter by letter on a fresh machine."""

    def __init__(self, kernel: str, alphabet: str) -> None:
        self.runner = Runner(SCENARIO, kernel)
        self.runner.k.tracing = True  # any letter may be the last: its decisions sign a finding
        self.program = Program((), ())
        self.alphabet = alphabet
        self.live: list[str] = ["P"]

    def offered(self) -> dict[str, Letter]:
        """The letters the alphabet offers next, by name."""
        if not self.program.names:
            return {x.name: x for x in roots()}
        options = letters(self.live, list(self.program.pins), self.alphabet)
        return {x.name: x for x in options}

    def apply(self, letter: Letter) -> tuple[str, ...]:
        """Run the letter; the names of the processes and pins it created."""
        before = self.program
        self.program = before.then(letter)
        self.runner.k.events.clear()  # the signature reads this letter's decisions only
        for i, raw in enumerate(self.program.steps[len(before.steps) :], len(before.steps)):
            self.runner.run_step(to_step(raw, i), judging=False)
        self.live = [name for name, p in self.runner.procs.items() if p.alive]
        children = range(before.children + 1, self.program.children + 1)
        pins = range(before.made + 1, self.program.made + 1)
        return (*(f"C{c}" for c in children), *(f"p{p}" for p in pins))


_PIN_NAME = re.compile(r"\bp\d+\b")


def normalised(sig: Signature) -> Signature:
    """A signature with pin names dropped from the letter's kind ("unpin p3" -> "unpin pN"):
    pins are numbered in the order a program takes them, so a minimised program may give the
    same pin another number."""
    prop, kind, *rest = sig
    return (prop, _PIN_NAME.sub("pN", str(kind)), *rest)


def letter_signature(prop: str, letter: Letter, runner: Runner) -> Signature:
    return normalised(signature(prop, letter, runner))


def generator(params: Params, index: int) -> random.Random:
    """Program `index`'s own generator: a str seed is hashed by SHA-512, the same in every
    process and run (unlike hash(), which PYTHONHASHSEED salts)."""
    return random.Random(f"cowlab-campaign:{params.seed}:{index}")


@dataclass(frozen=True)
class Raw:
    """A violation as a random program met it, before minimisation."""

    prop: str
    signature: Signature
    problem: str
    moves: tuple[Move, ...]  # the program up to the letter that broke the property


@dataclass(frozen=True)
class Drawn(Played):
    """A program as a worker ran it: what it broke, before minimisation."""

    raw: tuple[Raw, ...]


def draw(kernel: str, params: Params, index: int, patch: Patch | None = None) -> Drawn:
    """Program `index` on `kernel`: random letters until `params.length` after the root or a
    correctness property breaks, each signature met kept once. A broken performance property
    is recorded and the program goes on, as the search expands such a state."""
    _learn(patch)
    rng = generator(params, index)
    play = Play(kernel, params.alphabet)
    moves: list[Move] = []
    raw: dict[Signature, Raw] = {}
    for _ in range(params.length + 1):
        offered = play.offered()
        letter = offered[rng.choice(sorted(offered))]
        moves.append(Move(letter.name, play.apply(letter)))
        broken = violations(play.runner, params.props)
        for prop, problem in broken.items():
            sig = letter_signature(prop, letter, play.runner)
            raw.setdefault(sig, Raw(prop, sig, problem, tuple(moves)))
        if any(PROPERTIES[p].kind == "correctness" for p in broken):
            break
    return Drawn(kernel, index, len(moves), tuple(raw.values()))


def shrink(kernel: str, alphabet: str, raw: Raw, patch: Patch | None = None) -> tuple[Program, str]:
    """The raw finding minimised (minimise()), as a task of its own: a worker may take it."""
    _learn(patch)
    return minimise(kernel, alphabet, list(raw.moves), raw.prop, raw.signature)


def _learn(patch: Patch | None) -> None:
    # a worker learns the --policy patch here: it may be no fork of the process that loaded
    # it (a Dask worker)
    if patch is not None:
        register(patch)


# --- minimisation ----------------------------------------------------------------------------

_NAME = re.compile(r"P|C\d+|p\d+")


def rebind(name: str, names: dict[str, str]) -> str | None:
    """A letter's name with the processes and pins it refers to renamed as a shorter program
    numbers them; None when one of them is no longer created."""
    words = name.split()
    if any(_NAME.fullmatch(w) and w not in names for w in words):
        return None
    return " ".join(names[w] if _NAME.fullmatch(w) else w for w in words)


def replay(
    kernel: str, alphabet: str, moves: list[Move], prop: str, sig: Signature
) -> tuple[list[int], Program, str] | None:
    """Run the moves, renamed, up to the first letter that breaks `prop` with signature `sig`:
    the indices of the moves that ran, the program and the violation; None if none does. A
    move the alphabet does not offer there (its process exited, its pin was never taken) is
    skipped, so what runs is always a program the alphabet could have drawn."""
    play = Play(kernel, alphabet)
    names = {"P": "P"}
    ran: list[int] = []
    for i, move in enumerate(moves):
        name = rebind(move.name, names)
        letter = play.offered().get(name) if name is not None else None
        if letter is None:
            continue
        names.update(zip(move.made, play.apply(letter), strict=True))
        ran.append(i)
        problem = violations(play.runner, (prop,)).get(prop)
        if problem is not None and letter_signature(prop, letter, play.runner) == sig:
            return ran, play.program, problem
    return None


def minimise(
    kernel: str, alphabet: str, moves: list[Move], prop: str, sig: Signature
) -> tuple[Program, str]:
    """A shortest program found by delta debugging over the letters after the root that still
    breaks `prop` with signature `sig` at its last letter, and its violation."""
    root, rest = moves[0], moves[1:]

    def attempt(keep: list[int]) -> tuple[list[int], Program, str] | None:
        return replay(kernel, alphabet, [root, *(rest[i] for i in keep)], prop, sig)

    def test(keep: list[int]) -> list[int] | None:
        done = attempt(keep)
        return None if done is None else [keep[i - 1] for i in done[0][1:]]

    kept = ddmin(list(range(len(rest))), test)
    done = attempt(kept)
    if done is None:  # ddmin only keeps what passed the test: the full program always does
        raise AssertionError(f"{prop} on {kernel}: the minimised program no longer breaks it")
    return done[1], done[2]


def ddmin(items: list[int], test: Callable[[list[int]], list[int] | None]) -> list[int]:
    """Zeller's ddmin: a 1-minimal subsequence of `items` that passes `test`, which answers
    with the part of its input that was needed (a subsequence) or None; `items` passes."""
    cache: dict[tuple[int, ...], list[int] | None] = {}

    def passes(candidate: list[int]) -> list[int] | None:
        key = tuple(candidate)
        if key not in cache:
            cache[key] = test(candidate)
        return cache[key]

    items = passes(items) or items
    n = 2
    while len(items) >= 2:
        chunks = [items[len(items) * j // n : len(items) * (j + 1) // n] for j in range(n)]
        complements = [[x for c in chunks[:j] + chunks[j + 1 :] for x in c] for j in range(n)]
        smaller = next((r for c in chunks if (r := passes(c)) is not None), None)
        if smaller is not None:
            items, n = smaller, 2
            continue
        smaller = next((r for c in complements if (r := passes(c)) is not None), None)
        if smaller is not None:
            items, n = smaller, max(n - 1, 2)
        elif n >= len(items):
            break
        else:
            n = min(2 * n, len(items))
    if len(items) == 1 and passes([]) is not None:
        return []
    return items


# --- the campaign ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Campaign:
    """A campaign as the command line asks for it."""

    params: Params
    programs: int  # per kernel
    journal: Path
    jobs: int
    scheduler: str | None = None
    patch: Patch | None = None  # a --policy patch: one of the kernels is BASE+NAME


@dataclass
class CampaignResult:
    findings: list[Finding]  # one per kernel and signature, from the lowest program index
    programs: int  # programs finished (this run and the journal's earlier ones)
    seconds: float
    interrupted: bool = False


@dataclass(frozen=True)
class CampaignSummary:
    """What a campaign added to `cowlab check`'s result: the table's and the JSON's line."""

    params: Params
    programs: int  # finished, on all kernels together
    kernels: int
    findings: int  # (kernel, signature) pairs the campaign met
    beyond_search: int  # of those, ones the bounded search had not found
    seconds: float

    def line(self) -> str:
        p = self.params
        return (
            f"campaign: seed {p.seed}, {self.programs} random programs of {p.length + 1} "
            f"letters on {self.kernels} kernels: {self.findings} findings, "
            f"{self.beyond_search} beyond the search, {self.seconds:.1f} s"
        )


def _ignore_sigint() -> None:
    # Ctrl-C goes to the whole process group: the parent stops the campaign cleanly, workers
    # killed mid-program would only print tracebacks
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextmanager
def executor(jobs: int, scheduler: str | None) -> Iterator[tuple[Executor, int]]:
    """A process pool of `jobs`, or the workers of the Dask scheduler at `scheduler`; and how
    many programs to keep in flight."""
    if scheduler is None:
        pool = ProcessPoolExecutor(max_workers=jobs, initializer=_ignore_sigint)
        try:
            yield pool, 2 * jobs
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return
    from distributed import Client

    with Client(scheduler) as client:
        cores = sum(client.nthreads().values()) or 1
        # pure=False: Dask would otherwise key tasks by their arguments' hash and cache them
        yield client.get_executor(pure=False), 2 * cores


Key = tuple[str, int]  # (kernel, program index)


class Driver:
    """The campaign's bookkeeping in the parent process. Programs are drawn by workers in
    index order; once every lower-indexed program of its kernel has been drawn, a program's
    signatures that none of them met are minimised (each exactly once, however many workers
    run), and a program is written to the journal, findings and all, once it and every
    lower-indexed program of its kernel are complete: the journal holds a prefix of each
    kernel's programs, so a kill loses only what was not yet written."""

    def __init__(self, kernels: list[str], campaign: Campaign, journal: Journal) -> None:
        self.campaign, self.journal = campaign, journal
        n = campaign.programs
        self.order = {k: [i for i in range(n) if (k, i) not in journal.done] for k in kernels}
        self.total = sum(len(o) for o in self.order.values())
        self.draws = deque((k, i) for i in range(n) for k in kernels if (k, i) not in journal.done)
        self.decide_at = dict.fromkeys(kernels, 0)  # in order[k]: the next to decide
        self.write_at = dict.fromkeys(kernels, 0)  # in order[k]: the next to write
        self.met: dict[str, set[Signature]] = {k: set() for k in kernels}  # by decided ones
        self.drawn: dict[Key, Drawn] = {}  # drawn, not yet written
        self.waiting: dict[Key, set[Signature]] = {}  # decided: signatures being minimised
        self.minimised: dict[tuple[str, int, Signature], tuple[Program, str]] = {}
        self.shrinks: deque[tuple[Key, Raw]] = deque()
        self.written = 0

    def next_task(self, ahead: int) -> tuple[Callable[..., Any], tuple[Any, ...], Any] | None:
        """The next task to submit (function, arguments, tag): a minimisation first, as
        writes wait for it; a draw while fewer than `ahead` programs wait to be written."""
        c = self.campaign
        if self.shrinks:
            (k, i), raw = self.shrinks.popleft()
            return shrink, (k, c.params.alphabet, raw, c.patch), (k, i, raw.signature)
        if self.draws and len(self.drawn) < ahead:
            k, i = self.draws.popleft()
            return draw, (k, c.params, i, c.patch), (k, i, None)
        return None

    def done(self, tag: tuple[str, int, Signature | None], value: Any) -> None:
        k, i, sig = tag
        if sig is None:
            self.drawn[(k, i)] = value
            self._decide()
        else:
            self.minimised[(k, i, sig)] = value
            self.waiting[(k, i)].discard(sig)
        self._write()

    def _decide(self) -> None:
        for k, order in self.order.items():
            while self.decide_at[k] < len(order) and (k, order[self.decide_at[k]]) in self.drawn:
                i = order[self.decide_at[k]]
                known = self.journal.known(k, i) | self.met[k]
                new = [r for r in self.drawn[(k, i)].raw if r.signature not in known]
                self.waiting[(k, i)] = {r.signature for r in new}
                self.shrinks.extend(((k, i), r) for r in new)
                self.met[k] |= {r.signature for r in self.drawn[(k, i)].raw}
                self.decide_at[k] += 1

    def _write(self) -> None:
        for k, order in self.order.items():
            while self.write_at[k] < self.decide_at[k]:
                i = order[self.write_at[k]]
                if self.waiting[(k, i)]:
                    break
                del self.waiting[(k, i)]
                self.journal.record(self._ran(self.drawn.pop((k, i))))
                self.write_at[k] += 1
                self.written += 1

    def _ran(self, drawn: Drawn) -> Ran:
        """The program as the journal records it: each finding minimised or left to the
        lower-indexed program that met its signature first."""
        found = []
        for r in drawn.raw:
            key = (drawn.kernel, drawn.index, r.signature)
            program, problem = (
                self.minimised.pop(key) if key in self.minimised else (None, r.problem)
            )
            found.append(Found(r.prop, r.signature, problem, len(r.moves), program))
        return Ran(drawn.kernel, drawn.index, drawn.letters, tuple(found))


def run_campaign(
    kernels: list[str],
    campaign: Campaign,
    journal: Journal,
    progress: Callable[[int, int], None] | None = None,
) -> CampaignResult:
    """The campaign's programs not yet in the journal, each recorded as it completes; Ctrl-C
    stops it with what the journal holds."""
    started = time.perf_counter()
    driver = Driver(kernels, campaign, journal)
    interrupted = False
    with executor(campaign.jobs, campaign.scheduler) as (pool, window):
        running: dict[Future[Any], tuple[str, int, Signature | None]] = {}
        try:
            while driver.written < driver.total:
                while len(running) < window and (task := driver.next_task(4 * window)):
                    function, args, tag = task
                    running[pool.submit(function, *args)] = tag
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    tag = running.pop(future)
                    driver.done(tag, _result(future, tag[0], tag[1], campaign.params))
                if progress is not None:
                    progress(driver.written, driver.total)
        except KeyboardInterrupt:
            for future in running:
                future.cancel()
            interrupted = True
    findings = journal.findings(kernels, campaign.programs)
    programs = campaign.programs * len(kernels) - driver.total + driver.written
    return CampaignResult(findings, programs, time.perf_counter() - started, interrupted)


def _result(future: Future[Any], kernel: str, index: int, params: Params) -> Any:
    """A task's result; a model error says which program to replay to see it again."""
    try:
        return future.result()
    except Exception as e:
        e.add_note(f"cowlab check campaign: program {index} on {kernel}, {params}")
        raise


# --- `cowlab check --campaign` ---------------------------------------------------------------


def campaign_of(args: Any) -> Campaign | None:
    """The campaign `cowlab check`'s options ask for, None for none (their values were
    checked as the line was read); a journal of another campaign is a UsageError."""
    if args.campaign == 0:
        return None
    journal = Path(args.journal) if args.journal else Path(args.out) / "campaign.sqlite"
    props = tuple(args.property or PROPERTIES)
    params = Params(args.seed, args.length, args.alphabet, props)
    _open_journal(journal, params).close()  # a journal it cannot use fails before any search
    return Campaign(params, args.campaign, journal, args.jobs, args.scheduler)


def reach(address: str) -> None:
    """A scheduler that cannot be reached is one line before any search, not a traceback
    after it."""
    from cowlab.cli import UsageError

    try:
        from distributed import Client
    except ImportError:
        raise UsageError(
            "cowlab check: --scheduler needs Dask: pip install 'cowlab[dask]'"
        ) from None
    try:
        Client(address, timeout=10).close()
    except (OSError, ValueError) as e:
        raise UsageError(f"cowlab check: --scheduler {address}: {str(e).splitlines()[0]}") from None


def _open_journal(path: Path, params: Params) -> Journal:
    from cowlab.check.journal import Journal, JournalError
    from cowlab.cli import UsageError

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return Journal(path, params)
    except JournalError as e:
        raise UsageError(f"cowlab check: {e}") from None


def campaign_into(result: CheckResult, campaign: Campaign, quiet: bool) -> None:
    """Run the campaign on the result's kernels and add its findings to their outcomes, but
    for a signature the bounded search found already (its program is a shortest one)."""
    with (
        _open_journal(campaign.journal, campaign.params) as journal,
        progress(quiet) as bar,
    ):
        task = bar.add_task("campaign", total=None)
        done = run_campaign(
            result.kernels,
            replace(campaign, patch=result.patch),
            journal,
            lambda n, of: bar.update(task, completed=n, total=of),
        )
    result.interrupted |= done.interrupted
    beyond = 0
    for kernel in result.kernels:
        outcome = result.outcomes.get(kernel)
        if outcome is None:
            continue
        searched = {normalised(f.signature) for f in outcome.findings}
        extra = [f for f in done.findings if f.kernel == kernel and f.signature not in searched]
        result.outcomes[kernel] = replace(outcome, findings=[*outcome.findings, *extra])
        beyond += len(extra)
    result.campaign = CampaignSummary(
        campaign.params,
        done.programs,
        len(result.kernels),
        len(done.findings),
        beyond,
        done.seconds,
    )
