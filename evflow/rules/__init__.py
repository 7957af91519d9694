"""Rules: which events start which flow runs, and with which parameters.

This package is pure logic: no I/O, no asyncio, no clock. The engine keeps one
:class:`RuleState` per rule (or one :class:`RuleSet` for all of them), offers it each event with
the current time, calls :meth:`RuleState.due` when :meth:`RuleState.next_deadline` comes, and acts
on the returned decisions (creating runs durably, writing the audit trail).

Matching
    ``on`` is a sensor (anything with a ``source`` string: events whose ``source`` equals it), a
    glob on the event type (``"order.*"``, fnmatch-style and case-sensitive; ``*`` also crosses
    dots), or None (every event). ``match`` adds globs on ``type``/``source``/``subject`` (a list
    means any of) and filters on ``data.<path>`` fields (list indices allowed: ``data.items.0``):
    a scalar means equality, a list means membership, a dict holds operators (``eq ne gt ge lt
    le in not_in glob exists``, all must hold). A dict is always read as operators; to compare
    with a dict value use ``{"eq": {...}}``. A missing field fails every filter except
    ``exists: false``; a field that is present with a JSON null exists. ``true`` never equals
    ``1``.

Parameters
    ``params`` maps a parameter name to a value. A string that is exactly ``"{path}"``, with path
    one of ``id type source subject time dedup_key data data.<dotted path>``, takes that value
    from the event (JSON types kept, ``time`` as an ISO 8601 string). Every other value is a
    literal, copied as is: nothing is evaluated and nothing is formatted, so ``"x-{data.a}"`` is
    the literal string ``x-{data.a}``, and so are values nested in lists or dicts. A string shaped
    like a reference (``"{name}"`` or ``"{name.more}"``) whose name is not a known root is refused
    when the rule is built, to catch typos. In a correlate rule, references name the side,
    ``"{a.data.amount}"`` or ``"{b.id}"``, and ``"{key}"`` is the correlation key's value.

Policies (at most one per rule)
    ``debounce_s``: one run ``debounce_s`` after the last of a burst, params from the last event.
    ``batch``: one run per ``count`` events or per ``window_s`` from the first event of a batch.
    ``correlate``: one run when an ``a`` event and a ``b`` event with the same key arrive within
    ``window_s`` of each other; a lone event times out after ``window_s``.

Time is always the ``now`` passed in (the engine passes the arrival time), never ``event.time``.

Modules: ``rule`` (Rule), ``match`` (globs, filters, paths), ``policies`` (batch, correlate,
when-running), ``state`` (one rule's held events), ``ruleset`` (all rules), ``decisions``.
"""

from .decisions import (
    CorrelationTimedOut,
    Decision,
    Held,
    NotMapped,
    NotMatched,
    RunRequested,
    run_key,
)
from .policies import Batch, Correlate, PolicyAction, TimeoutAction, WhenRunning, policy_action
from .rule import Rule
from .ruleset import RuleSet
from .state import RuleState

__all__ = [
    "Batch",
    "Correlate",
    "CorrelationTimedOut",
    "Decision",
    "Held",
    "NotMapped",
    "NotMatched",
    "PolicyAction",
    "Rule",
    "RuleSet",
    "RuleState",
    "RunRequested",
    "TimeoutAction",
    "WhenRunning",
    "policy_action",
    "run_key",
]
