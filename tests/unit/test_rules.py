"""Rules: matching, parameter mapping, debounce / batch / correlate and run policies."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from evflow.errors import RuleError
from evflow.events import Event
from evflow.rules import (
    Batch,
    Correlate,
    CorrelationTimedOut,
    Decision,
    Held,
    NotMapped,
    NotMatched,
    Rule,
    RuleSet,
    RuleState,
    RunRequested,
    policy_action,
    run_key,
)

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def ev(
    type_: str = "order.created",
    data: Any = None,
    *,
    id_: str = "e1",
    source: str = "shop",
    subject: str | None = None,
) -> Event:
    return Event(type=type_, source=source, data=data, subject=subject, id=id_, time=T0, uid=id_)


@dataclass
class SourceLike:
    """Anything with a ``source`` string can be a rule's ``on``."""

    name: str
    source: str


def state(rule: Rule) -> RuleState:
    return RuleState(rule.bind("flow") if rule.flow is None else rule)


def only(decisions: list[Decision]) -> Decision:
    assert len(decisions) == 1, decisions
    return decisions[0]


def reason_of(rule: Rule, event: Event) -> str | None:
    return rule.mismatch(event)


# -- on and globs -------------------------------------------------------------------------------


def test_on_type_glob() -> None:
    rule = Rule("order.*")
    assert reason_of(rule, ev("order.created")) is None
    assert reason_of(rule, ev("order.paid.v2")) is None
    assert reason_of(rule, ev("user.created")) == "type 'user.created' does not match 'order.*'"
    assert reason_of(rule, ev("Order.created")) is not None  # case-sensitive


def test_on_sensor_matches_exact_source() -> None:
    rule = Rule(SourceLike("inbox", "file://inbox"))
    assert reason_of(rule, ev(source="file://inbox")) is None
    assert reason_of(rule, ev(source="file://inbox/sub")) == (
        "source 'file://inbox/sub' is not 'file://inbox'"
    )


def test_on_none_matches_everything() -> None:
    rule = Rule()
    assert reason_of(rule, ev("anything", source="x")) is None


def test_source_and_subject_globs() -> None:
    rule = Rule(match={"source": ["kafka:*", "webhook:*"], "subject": "eu/*"})
    assert reason_of(rule, ev(source="kafka:orders", subject="eu/fr")) is None
    assert reason_of(rule, ev(source="webhook:gh", subject="eu/de")) is None
    assert reason_of(rule, ev(source="file:x", subject="eu/fr")) == (
        "source 'file:x' does not match any of 'kafka:*', 'webhook:*'"
    )
    assert reason_of(rule, ev(source="kafka:o", subject="us/ny")) == (
        "subject 'us/ny' does not match 'eu/*'"
    )
    assert reason_of(rule, ev(source="kafka:o")) == ("subject is missing, so does not match 'eu/*'")


def test_type_glob_in_match() -> None:
    rule = Rule(match={"type": ["a.*", "b"]})
    assert reason_of(rule, ev("a.x")) is None
    assert reason_of(rule, ev("b")) is None
    assert reason_of(rule, ev("bb")) is not None


# -- data filters -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ops", "passing", "failing", "reason"),
    [
        ({"eq": 10}, 10, 3, "data.size=3 is not 10"),
        ({"ne": 10}, 3, 10, "data.size=10 equals 10"),
        ({"gt": 10}, 11, 3, "data.size=3 is not > 10"),
        ({"ge": 10}, 10, 9.5, "data.size=9.5 is not >= 10"),
        ({"lt": 10}, 9, 10, "data.size=10 is not < 10"),
        ({"le": 10}, 10, 11, "data.size=11 is not <= 10"),
        ({"in": [1, 2]}, 2, 3, "data.size=3 is not one of [1, 2]"),
        ({"not_in": [1, 2]}, 3, 1, "data.size=1 is one of [1, 2]"),
        ({"glob": "*.csv"}, "a.csv", "a.txt", "data.size='a.txt' does not match '*.csv'"),
        ({"gt": "b"}, "c", "a", "data.size='a' is not > 'b'"),
        ({"gt": 1, "lt": 5}, 3, 7, "data.size=7 is not < 5"),
    ],
)
def test_data_operators(ops: dict[str, Any], passing: Any, failing: Any, reason: str) -> None:
    rule = Rule(match={"data.size": ops})
    assert reason_of(rule, ev(data={"size": passing})) is None
    assert reason_of(rule, ev(data={"size": failing})) == reason


def test_exists_operator() -> None:
    must = Rule(match={"data.tag": {"exists": True}})
    must_not = Rule(match={"data.tag": {"exists": False}})
    assert reason_of(must, ev(data={"tag": None})) is None  # null is present
    assert reason_of(must, ev(data={})) == "data.tag is missing"
    assert reason_of(must_not, ev(data={})) is None
    assert reason_of(must_not, ev(data={"tag": "x"})) == "data.tag exists ('x')"


def test_scalar_is_equality_and_list_is_membership() -> None:
    rule = Rule(match={"data.kind": "csv", "data.region": ["eu", "us"]})
    assert reason_of(rule, ev(data={"kind": "csv", "region": "eu"})) is None
    assert reason_of(rule, ev(data={"kind": "tsv", "region": "eu"})) == (
        "data.kind='tsv' is not 'csv'"
    )
    assert reason_of(rule, ev(data={"kind": "csv", "region": "ap"})) == (
        "data.region='ap' is not one of ['eu', 'us']"
    )


def test_json_equality_true_is_not_one() -> None:
    rule = Rule(match={"data.flag": True})
    assert reason_of(rule, ev(data={"flag": True})) is None
    assert reason_of(rule, ev(data={"flag": 1})) == "data.flag=1 is not True"
    assert reason_of(Rule(match={"data.n": [1]}), ev(data={"n": True})) is not None


def test_nested_paths_and_list_indices() -> None:
    rule = Rule(match={"data.items.0.sku": "A1", "data.meta.size": {"ge": 1}})
    assert reason_of(rule, ev(data={"items": [{"sku": "A1"}], "meta": {"size": 1}})) is None
    assert reason_of(rule, ev(data={"items": [], "meta": {"size": 1}})) == (
        "data.items.0.sku is missing"
    )


@pytest.mark.parametrize("data", [None, {}, {"size": None}, {"size": {"x": 1}}, "text"])
def test_missing_or_unusable_values_do_not_match(data: Any) -> None:
    rule = Rule(match={"data.size": {"gt": 10}})
    reason = reason_of(rule, ev(data=data))
    assert reason is not None
    assert reason.startswith("data.size")


def test_missing_path_reason() -> None:
    assert reason_of(Rule(match={"data.size": {"gt": 10}}), ev(data={})) == "data.size is missing"


def test_incomparable_types() -> None:
    rule = Rule(match={"data.size": {"gt": 10}})
    assert reason_of(rule, ev(data={"size": "big"})) == (
        "data.size='big' cannot be compared with 10"
    )
    assert reason_of(rule, ev(data={"size": True})) == "data.size=True cannot be compared with 10"


def test_glob_on_non_string_value() -> None:
    rule = Rule(match={"data.path": {"glob": ["*.csv", "*.tsv"]}})
    assert reason_of(rule, ev(data={"path": "x.tsv"})) is None
    assert reason_of(rule, ev(data={"path": 5})) == "data.path=5 is not a string"


def test_not_matched_decision() -> None:
    st = state(Rule("order.*", name="orders"))
    decision = only(st.offer(ev("user.created"), T0))
    assert decision == NotMatched("orders", "e1", "type 'user.created' does not match 'order.*'")


# -- params -------------------------------------------------------------------------------------


def test_params_keep_json_types() -> None:
    rule = Rule(
        params={
            "id": "{id}",
            "type": "{type}",
            "source": "{source}",
            "subject": "{subject}",
            "time": "{time}",
            "dedup": "{dedup_key}",
            "data": "{data}",
            "n": "{data.n}",
            "f": "{data.f}",
            "flag": "{data.flag}",
            "none": "{data.none}",
            "rows": "{data.rows}",
            "first": "{data.rows.0.x}",
            "obj": "{data.obj}",
            "limit": 5,
            "label": "fixed",
        }
    )
    data = {
        "n": 3,
        "f": 1.5,
        "flag": False,
        "none": None,
        "rows": [{"x": 1}, {"x": 2}],
        "obj": {"k": "v"},
    }
    event = ev("order.created", data, subject="s1")
    run = only(state(rule).offer(event, T0))
    assert isinstance(run, RunRequested)
    assert run.params == {
        "id": "e1",
        "type": "order.created",
        "source": "shop",
        "subject": "s1",
        "time": "2024-03-01T12:00:00+00:00",
        "dedup": "shop/e1",
        "data": data,
        "n": 3,
        "f": 1.5,
        "flag": False,
        "none": None,
        "rows": [{"x": 1}, {"x": 2}],
        "first": 1,
        "obj": {"k": "v"},
        "limit": 5,
        "label": "fixed",
    }
    assert type(run.params["n"]) is int
    run.params["rows"].append("mutated")
    assert data["rows"] == [{"x": 1}, {"x": 2}]  # params are copies, the event is untouched


def test_strings_with_braces_stay_literal() -> None:
    literals = {
        "prefixed": "x-{data.a}",
        "two": "{data.a}{data.b}",
        "spaced": "{ data.a }",
        "json": '{"a": 1}',
        "empty": "{}",
        "nested": {"ref": "{data.a}"},
        "listed": ["{data.a}"],
        "format": "{0}",
    }
    run = only(state(Rule(params=literals)).offer(ev(data={"a": "A", "b": "B"}), T0))
    assert isinstance(run, RunRequested)
    assert run.params == literals


def test_map_params_helper() -> None:
    rule = Rule(params={"p": "{data.path}"})
    assert rule.map_params(ev(data={"path": "x.csv"})) == {"p": "x.csv"}
    with pytest.raises(RuleError, match=r"data\.path"):
        rule.map_params(ev(data={}))


def test_missing_param_path_is_not_mapped() -> None:
    st = state(Rule("order.*", params={"amount": "{data.amount}"}, name="pay"))
    decision = only(st.offer(ev(data={"other": 1}), T0))
    assert isinstance(decision, NotMapped)
    assert decision.rule == "pay"
    assert decision.event_id == "e1"
    assert "rule 'pay'" in decision.reason
    assert "data.amount" in decision.reason


def test_no_params_means_empty_params() -> None:
    run = only(state(Rule()).offer(ev(data={"a": 1}), T0))
    assert isinstance(run, RunRequested)
    assert run.params == {}


def test_reference_typos_are_refused() -> None:
    with pytest.raises(RuleError, match=r"rule 'r': param 'p' refers to unknown path '\{dta\.a\}'"):
        Rule(params={"p": "{dta.a}"}, name="r")
    with pytest.raises(RuleError, match="unknown path"):
        Rule(params={"p": "{data..a}"})
    with pytest.raises(RuleError, match="unknown path"):
        Rule(params={"p": "{id.x}"})
    with pytest.raises(RuleError, match="unknown path"):
        Rule(params={"p": "{key}"})  # only in correlate rules


# -- debounce -----------------------------------------------------------------------------------


def test_debounce_one_run_after_last_event() -> None:
    st = state(Rule(params={"path": "{data.path}"}, debounce_s=5, name="deb"))
    for i, t in enumerate((0, 2, 4)):
        held = only(st.offer(ev(data={"path": f"p{i}"}, id_=f"e{i}"), at(t)))
        assert isinstance(held, Held)
        assert held.why == f"debouncing until {at(t + 5).isoformat()}"
    assert st.held_event_ids() == {"e0", "e1", "e2"}
    assert st.next_deadline() == at(9)
    assert st.due(at(8.999)) == []
    run = only(st.due(at(9)))
    assert run == RunRequested(
        "deb", "flow", {"path": "p2"}, ("e0", "e1", "e2"), run_key("deb", ["e0", "e1", "e2"])
    )
    assert st.held_event_ids() == set()
    assert st.next_deadline() is None
    assert st.due(at(100)) == []


def test_debounce_late_event_fires_previous_burst_first() -> None:
    st = state(Rule(debounce_s=5))
    st.offer(ev(id_="a"), at(0))
    decisions = st.offer(ev(id_="b"), at(7))  # the engine was late calling due()
    assert [type(d) for d in decisions] == [RunRequested, Held]
    first = decisions[0]
    assert isinstance(first, RunRequested)
    assert first.event_ids == ("a",)
    assert st.held_event_ids() == {"b"}
    assert st.next_deadline() == at(12)


def test_debounce_unmappable_event_does_not_reset_timer() -> None:
    st = state(Rule(params={"p": "{data.p}"}, debounce_s=5))
    st.offer(ev(data={"p": 1}, id_="a"), at(0))
    assert isinstance(only(st.offer(ev(data={}, id_="b"), at(3))), NotMapped)
    assert st.next_deadline() == at(5)
    assert st.held_event_ids() == {"a"}


# -- batch --------------------------------------------------------------------------------------


def test_batch_by_count() -> None:
    st = state(Rule(params={"f": "{data.f}"}, batch=Batch(count=3, param="files"), name="b"))
    d1 = only(st.offer(ev(data={"f": "x"}, id_="1"), at(0)))
    d2 = only(st.offer(ev(data={"f": "y"}, id_="2"), at(1)))
    assert d1 == Held("b", "1", "batch 1/3")
    assert d2 == Held("b", "2", "batch 2/3")
    assert st.next_deadline() is None  # count only: nothing to wait for
    run = only(st.offer(ev(data={"f": "z"}, id_="3"), at(2)))
    assert isinstance(run, RunRequested)
    assert run.params == {"files": [{"f": "x"}, {"f": "y"}, {"f": "z"}]}
    assert run.event_ids == ("1", "2", "3")
    assert st.held_event_ids() == set()
    assert isinstance(only(st.offer(ev(data={"f": "w"}, id_="4"), at(3))), Held)
    assert st.held_event_ids() == {"4"}


def test_batch_by_time_with_event_dicts() -> None:
    st = state(Rule(batch=Batch(window_s=10)))
    held = only(st.offer(ev(data={"n": 1}, id_="1"), at(0)))
    assert isinstance(held, Held)
    assert held.why == f"batch 1 until {at(10).isoformat()}"
    st.offer(ev("order.paid", {"n": 2}, id_="2", subject="s"), at(4))
    assert st.next_deadline() == at(10)  # from the first event, not the last
    assert st.due(at(9)) == []
    run = only(st.due(at(10)))
    assert isinstance(run, RunRequested)
    assert run.params == {
        "events": [
            {
                "id": "1",
                "type": "order.created",
                "source": "shop",
                "subject": None,
                "time": T0.isoformat(),
                "data": {"n": 1},
            },
            {
                "id": "2",
                "type": "order.paid",
                "source": "shop",
                "subject": "s",
                "time": T0.isoformat(),
                "data": {"n": 2},
            },
        ]
    }
    assert st.next_deadline() is None


def test_batch_count_or_window_whichever_first() -> None:
    st = state(Rule(batch=Batch(count=2, window_s=10)))
    assert only(st.offer(ev(id_="1"), at(0))) == Held(
        "flow:*#0", "1", f"batch 1/2 until {at(10).isoformat()}"
    )
    run = only(st.due(at(10)))
    assert isinstance(run, RunRequested)
    assert run.event_ids == ("1",)


def test_reoffering_held_event_does_not_double_count() -> None:
    st = state(Rule(batch=Batch(count=2)))
    st.offer(ev(id_="1"), at(0))
    again = only(st.offer(ev(id_="1"), at(1)))
    assert isinstance(again, Held)
    assert again.why.startswith("already held: batch 1/2")
    assert st.held_event_ids() == {"1"}
    run = only(st.offer(ev(id_="2"), at(2)))
    assert isinstance(run, RunRequested)
    assert run.event_ids == ("1", "2")
    # offered again after release: the same decision, the same key, no new batch
    assert st.offer(ev(id_="1"), at(3)) == [run]
    assert st.held_event_ids() == set()


# -- correlate ----------------------------------------------------------------------------------

ORDER_PAY = Correlate(a="order.created", b="payment.*", key="data.order_id", window_s=60)


def corr_rule(on_timeout: str = "ignore", **kw: Any) -> Rule:
    corr = Correlate(
        a=ORDER_PAY.a,
        b=ORDER_PAY.b,
        key=ORDER_PAY.key,
        window_s=ORDER_PAY.window_s,
        on_timeout=on_timeout,  # type: ignore[arg-type]
    )
    params = kw.pop(
        "params", {"order": "{a.id}", "amount": "{b.data.amount}", "oid": "{key}", "tag": "t"}
    )
    return Rule(correlate=corr, params=params, name="pair", **kw).bind("flow")


def order(oid: int, id_: str) -> Event:
    return ev("order.created", {"order_id": oid}, id_=id_)


def payment(oid: int, id_: str, amount: float = 9.5) -> Event:
    return ev("payment.settled", {"order_id": oid, "amount": amount}, id_=id_)


@pytest.mark.parametrize("a_first", [True, False])
def test_correlate_pairs_in_either_order(a_first: bool) -> None:
    st = RuleState(corr_rule())
    first, second = (
        (order(7, "A"), payment(7, "B")) if a_first else (payment(7, "B"), order(7, "A"))
    )
    held = only(st.offer(first, at(0)))
    assert isinstance(held, Held)
    other = "b ('payment.*')" if a_first else "a ('order.created')"
    assert held.why == f"waiting for {other} with data.order_id=7 until {at(60).isoformat()}"
    assert st.next_deadline() == at(60)
    run = only(st.offer(second, at(59)))
    assert run == RunRequested(
        "pair",
        "flow",
        {"order": "A", "amount": 9.5, "oid": 7, "tag": "t"},
        ("A", "B"),
        run_key("pair", ["A", "B"]),
    )
    assert st.held_event_ids() == set()
    assert st.next_deadline() is None
    assert st.due(at(1000)) == []


def test_correlate_keys_do_not_cross_and_oldest_pairs_first() -> None:
    st = RuleState(corr_rule())
    st.offer(order(1, "A1"), at(0))
    st.offer(order(1, "A1bis"), at(1))
    assert isinstance(only(st.offer(payment(2, "B2"), at(2))), Held)
    run = only(st.offer(payment(1, "B1"), at(3)))
    assert isinstance(run, RunRequested)
    assert run.event_ids == ("A1", "B1")
    assert st.held_event_ids() == {"A1bis", "B2"}


def test_correlate_without_params_gives_both_events() -> None:
    st = RuleState(corr_rule(params=None))
    st.offer(order(3, "A"), at(0))
    run = only(st.offer(payment(3, "B"), at(1)))
    assert isinstance(run, RunRequested)
    assert run.params["key"] == 3
    assert run.params["a"]["id"] == "A"
    assert run.params["b"]["data"] == {"order_id": 3, "amount": 9.5}


def test_correlate_partner_too_late_does_not_pair() -> None:
    st = RuleState(corr_rule())
    st.offer(order(7, "A"), at(0))
    decisions = st.offer(payment(7, "B"), at(60))  # the window is [0, 60)
    assert [type(d) for d in decisions] == [CorrelationTimedOut, Held]
    assert st.held_event_ids() == {"B"}


@pytest.mark.parametrize("action", ["ignore", "alert"])
def test_correlate_timeout_without_run(action: str) -> None:
    st = RuleState(corr_rule(action))
    st.offer(payment(7, "B"), at(0))
    assert st.due(at(59.9)) == []
    timed_out = only(st.due(at(60)))
    assert timed_out == CorrelationTimedOut(
        "pair",
        ("B",),
        7,
        action,  # type: ignore[arg-type]
        "no a event ('order.created') with data.order_id=7 within 60s",
    )
    assert st.held_event_ids() == set()
    assert st.next_deadline() is None


def test_correlate_timeout_runs_with_the_side_present() -> None:
    st = RuleState(corr_rule("run"))
    st.offer(order(7, "A"), at(0))
    timed_out, run = st.due(at(61))
    assert isinstance(timed_out, CorrelationTimedOut)
    assert timed_out.action == "run"
    assert timed_out.event_ids == ("A",)
    assert run == RunRequested(
        "pair",
        "flow",
        {"order": "A", "amount": None, "oid": 7, "tag": "t"},
        ("A",),
        "pair:A",
    )
    assert st.offer(order(7, "A"), at(62)) == [timed_out, run]  # replay: same decisions


def test_correlate_unmapped_and_unmatched() -> None:
    st = RuleState(corr_rule())
    missing_key = only(st.offer(ev("order.created", {}, id_="x"), at(0)))
    assert missing_key == NotMapped(
        "pair", "x", "rule 'pair': correlation key data.order_id is missing"
    )
    no_amount = only(st.offer(ev("payment.settled", {"order_id": 1}, id_="y"), at(0)))
    assert isinstance(no_amount, NotMapped)
    assert "b.data.amount" in no_amount.reason
    neither = only(st.offer(ev("refund.created", {"order_id": 1}, id_="z"), at(0)))
    assert neither == NotMatched(
        "pair", "z", "type 'refund.created' matches neither a ('order.created') nor b ('payment.*')"
    )
    assert st.held_event_ids() == set()


def test_correlate_params_must_name_a_side() -> None:
    with pytest.raises(RuleError, match=r"param 'p' refers to unknown path '\{data\.x\}'"):
        corr_rule(params={"p": "{data.x}"})
    with pytest.raises(RuleError, match="unknown path"):
        corr_rule(params={"p": "{c.data.x}"})


# -- policies and validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when_running", "active", "expected"),
    [
        ("queue", 0, "start"),
        ("queue", 3, "start"),
        ("skip", 0, "start"),
        ("skip", 1, "skip"),
        ("replace", 0, "start"),
        ("replace", 2, "replace"),
    ],
)
def test_policy_action(when_running: str, active: int, expected: str) -> None:
    assert policy_action(when_running, active) == expected


def test_policy_action_validates() -> None:
    with pytest.raises(RuleError, match="when_running must be one of queue, skip, replace"):
        policy_action("drop", 0)
    with pytest.raises(RuleError, match="active_runs"):
        policy_action("queue", -1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"match": {"colour": "red"}}, "rule 'r': unknown match key 'colour'"),
        ({"match": {"data": 1}}, "rule 'r': unknown match key 'data'"),
        (
            {"match": {"data.a": {"gte": 1}}},
            "rule 'r': match key 'data.a' has unknown operator 'gte'",
        ),
        ({"match": {"data.a": {}}}, "rule 'r': match key 'data.a' has an empty operator dict"),
        (
            {"match": {"data.a": {"in": 3}}},
            "rule 'r': match key 'data.a' operator 'in' needs a list",
        ),
        ({"match": {"data.a": {"exists": 1}}}, "operator 'exists' needs true or false"),
        ({"match": {"data.a": {"gt": [1]}}}, "operator 'gt' needs a number or a string"),
        ({"match": {"type": []}}, "rule 'r': match key 'type' needs a glob string"),
        ({"match": {"subject": 5}}, "rule 'r': match key 'subject' needs a glob string"),
        ({"when_running": "later"}, "rule 'r': when_running must be one of queue, skip, replace"),
        ({"debounce_s": 0}, "rule 'r': debounce_s must be a number > 0"),
        (
            {"debounce_s": 1, "batch": Batch(count=2)},
            "choose one of debounce_s, batch and correlate",
        ),
        ({"priority": "high"}, "rule 'r': priority must be an integer"),
        ({"on": 42}, "rule 'r': on must be a sensor"),
        ({"params": ["x"]}, "rule 'r': params must be a dict"),
    ],
)
def test_rule_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(RuleError) as info:
        Rule(name="r", **kwargs)
    assert message in str(info.value)


def test_unnamed_rule_errors_name_on_and_flow() -> None:
    with pytest.raises(RuleError, match=r"rule on 'order\.\*' of flow 'etl': unknown match key"):
        Rule("order.*", flow="etl", match={"bad": 1})


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Batch(), "batch needs a count, a window_s or both"),
        (lambda: Batch(count=0), "batch count must be an integer >= 1"),
        (lambda: Batch(window_s=-1), "batch window_s must be a number > 0"),
        (lambda: Batch(count=2, param="not valid"), "batch param must be an identifier"),
        (lambda: Correlate("a", "b", "data.k", 0), "correlate window_s must be a number > 0"),
        (lambda: Correlate("a", "b", "nope", 5), "correlate key 'nope' is not a path"),
        (lambda: Correlate("", "b", "data.k", 5), "correlate a must be a non-empty type glob"),
        (
            lambda: Correlate("a", "b", "data.k", 5, on_timeout="page"),  # type: ignore[arg-type]
            "correlate on_timeout must be one of ignore, alert, run",
        ),
    ],
)
def test_policy_validation(make: Any, message: str) -> None:
    with pytest.raises(RuleError) as info:
        make()
    assert message in str(info.value)


# -- binding and names --------------------------------------------------------------------------


@dataclass
class NamedFlow:
    name: str


def test_bind_names_and_copies() -> None:
    rule = Rule(SourceLike("inbox", "file://inbox"))
    bound = rule.bind(NamedFlow("ingest"), index=2)
    assert (bound.flow, bound.name) == ("ingest", "ingest:inbox#2")
    assert (rule.flow, rule.name) == (None, None)
    assert Rule("order.*").bind("etl").name == "etl:order.*#0"
    assert Rule(name="mine").bind("etl").name == "mine"
    assert bound.with_name("x").name == "x"
    assert bound.bind("ingest").name == "ingest:inbox#2"
    with pytest.raises(
        RuleError, match="rule 'ingest:inbox#2' belongs to flow 'ingest', not 'etl'"
    ):
        bound.bind("etl")
    with pytest.raises(RuleError, match="name must be a non-empty string"):
        rule.with_name(" ")


def test_state_needs_a_bound_rule() -> None:
    with pytest.raises(RuleError, match=r"is not bound to a flow; call rule\.bind\(flow\)"):
        RuleState(Rule("order.*", name="r"))


# -- idempotency keys ---------------------------------------------------------------------------


def feed(rule: Rule) -> list[str]:
    st = RuleState(rule)
    keys: list[str] = []
    events = [order(1, "A"), payment(1, "B"), order(2, "C"), payment(2, "D")]
    for i, event in enumerate(events):
        keys += [d.key for d in st.offer(event, at(i)) if isinstance(d, RunRequested)]
    keys += [d.key for d in st.due(at(1000)) if isinstance(d, RunRequested)]
    return keys


@pytest.mark.parametrize(
    "rule",
    [
        Rule(name="plain").bind("f"),
        Rule(name="deb", debounce_s=1.5).bind("f"),
        Rule(name="bat", batch=Batch(count=3, window_s=30)).bind("f"),
        corr_rule(),
    ],
    ids=["plain", "debounce", "batch", "correlate"],
)
def test_keys_are_stable_across_states(rule: Rule) -> None:
    first, second = feed(rule), feed(rule)
    assert first
    assert first == second
    assert len(set(first)) == len(first)
    assert all(k.startswith(f"{rule.name}:") for k in first)


def test_run_key_shape() -> None:
    assert run_key("r", ["e1"]) == "r:e1"
    assert run_key("r", ["b", "a"]) == run_key("r", ["a", "b"])
    assert run_key("r", ["a", "b"]) != run_key("r", ["a", "c"])
    assert run_key("r", ["a", "b"]) != run_key("s", ["a", "b"])
    with pytest.raises(RuleError):
        run_key("r", [])


# -- rule sets ----------------------------------------------------------------------------------


def test_rule_set() -> None:
    rules = RuleSet(
        [
            Rule("order.*", name="now").bind("f"),
            Rule("order.*", name="later", debounce_s=10).bind("g"),
            Rule("payment.*", name="other").bind("h"),
        ]
    )
    decisions = rules.offer(order(1, "A"), at(0))
    assert [type(d) for d in decisions] == [RunRequested, Held, NotMatched]
    assert rules.held_event_ids() == {"A"}
    assert rules.next_deadline() == at(10)
    fired = only(rules.due(at(10)))
    assert isinstance(fired, RunRequested)
    assert fired.flow == "g"
    assert rules.get("later").debounce_s == 10
    assert len(rules) == 3
    with pytest.raises(RuleError, match="rule 'now' is already in the rule set"):
        rules.add(Rule(name="now").bind("x"))
    assert rules.remove("other").name == "other"
    assert [r.name for r in rules] == ["now", "later"]
