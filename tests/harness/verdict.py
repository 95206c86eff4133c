"""The final check of the invariants (SPEC section 4) from the database and the SMS providers' records."""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from tests.harness.faults import PhaseResult
from tests.harness.loyalty import Operation
from tests.harness.stack import CODE_RE, PROGRAM, Stack

# --- the final check ------------------------------------------------------------------------------


@dataclass
class Verdict:
    lost: Counter  # phase -> redemptions answered 201 that are missing, or whose SMS never arrived
    doubled: Counter  # phase -> redemptions or SMS more than once, codes to two subscribers
    lines: list[str]  # one per invariant, with its count

    @property
    def total_lost(self) -> int:
        return sum(self.lost.values())

    @property
    def total_doubled(self) -> int:
        return sum(self.doubled.values())


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def wait_settled(st: Stack, within: float = 600) -> int:
    """Waits until no redemption is still on its way; returns how many still are."""
    deadline = time.monotonic() + within
    while True:
        waiting = st.sql("SELECT count(*) FROM redemptions WHERE status IN ('accepted', 'sent')")[0][0]
        if waiting == 0 or time.monotonic() > deadline:
            return waiting
        time.sleep(1)


def check(st: Stack, ops: list[Operation]) -> Verdict:
    lost: Counter = Counter()
    doubled: Counter = Counter()
    lines: list[str] = []
    by_key = {op.key: op for op in ops}
    by_msisdn = {op.msisdn: op for op in ops}
    rows = st.sql(
        "SELECT r.external_id, r.id, r.status, r.msisdn, r.code_id, r.reward_last4, r.nominal_minor,"
        " (SELECT count(*) FROM reconciliation_records c WHERE c.redemption_id = r.id AND c.type = 'issue'),"
        " (SELECT string_agg(m.status, ',') FROM sms_messages m WHERE m.redemption_id = r.id)"
        " FROM redemptions r JOIN programs p ON p.id = r.program_id WHERE p.code = %s",
        (PROGRAM,),
    )
    redemptions: dict[str, list[tuple]] = defaultdict(list)
    for row in rows:
        redemptions[row[0]].append(row)
    sms = read_records(st.smsc_record) + read_records(st.gateway_record)
    sms_by_to: dict[str, list[dict]] = defaultdict(list)
    for message in sms:
        sms_by_to[message["to"]].append(message)

    answered = [op for op in ops if op.final == 201]
    missing = [op for op in answered if not redemptions.get(op.key)]
    twice = [key for key, found in redemptions.items() if len(found) > 1]
    for op in missing:
        lost[op.phase] += 1
    for key in twice:
        doubled[by_key[key].phase if key in by_key else "?"] += 1
    lines.append(
        f"redemptions answered 201: {len(answered)}; missing {len(missing)}, more than once {len(twice)}"
    )

    no_record = [r for found in redemptions.values() for r in found if r[7] != 1]
    lines.append(f"redemptions without exactly one issue record: {len(no_record)}")
    for r in no_record:
        doubled[by_key[r[0]].phase if r[0] in by_key else "?"] += 1

    undelivered, sms_twice, sms_none = [], [], []
    for op in answered:
        found = redemptions.get(op.key)
        if not found:
            continue
        r = found[0]
        messages = sms_by_to.get(op.msisdn, [])
        if len(messages) == 0:
            sms_none.append(op)
            lost[op.phase] += 1
        elif len(messages) > 1:
            sms_twice.append(op)
            doubled[op.phase] += 1
        if r[2] != "delivered" or r[8] != "delivered":
            undelivered.append((op, r[2], r[8]))
            if messages:
                lost[op.phase] += 1
    lines.append(
        f"SMS at the SMSC/gateway per redemption answered 201: none {len(sms_none)}, more than once"
        f" {len(sms_twice)}; not receipt-settled (delivered) {len(undelivered)}"
        + (f" e.g. {[(u[0].key, u[1], u[2]) for u in undelivered[:3]]}" if undelivered else "")
    )

    numbers = {r[3] for found in redemptions.values() for r in found}
    phantom = [m for m in sms if m["to"] not in numbers]
    for m in phantom:
        doubled[by_msisdn[m["to"]].phase if m["to"] in by_msisdn else "?"] += 1
    lines.append(f"SMS for a redemption that does not exist: {len(phantom)}")

    codes_to: dict[str, set[str]] = defaultdict(set)
    wrong_code = 0
    last4 = {r[3]: r[5] for found in redemptions.values() for r in found}
    for m in sms:
        found_codes = CODE_RE.findall(m.get("text", ""))
        for code in found_codes:
            codes_to[code].add(m["to"])
        if m["to"] in last4 and not any(code.endswith(last4[m["to"]]) for code in found_codes):
            wrong_code += 1
    shared = [code for code, tos in codes_to.items() if len(tos) > 1]
    db_shared = st.sql(
        "SELECT count(*) FROM (SELECT code_id FROM redemptions WHERE code_id IS NOT NULL AND"
        " status <> 'cancelled' GROUP BY code_id HAVING count(*) > 1) AS d"
    )[0][0]
    lines.append(
        f"codes issued twice: {db_shared} in the database, {len(shared)} sent to two numbers;"
        f" SMS without their redemption's code: {wrong_code}"
    )
    doubled["codes"] += db_shared + len(shared) + wrong_code
    if not doubled["codes"]:
        del doubled["codes"]

    records, record_sum, redemption_count, nominal_sum = st.sql(
        "SELECT (SELECT count(*) FROM reconciliation_records WHERE type = 'issue'),"
        " (SELECT coalesce(sum(quantity * face_value_minor), 0) FROM reconciliation_records),"
        " (SELECT count(*) FROM redemptions), (SELECT coalesce(sum(nominal_minor), 0) FROM redemptions)"
    )[0]
    budget = st.sql(
        "SELECT coalesce(sum(spent_minor), 0) FROM program_budget_usage u"
        " JOIN programs p ON p.id = u.program_id WHERE p.code = %s",
        (PROGRAM,),
    )[0][0]
    balanced = records == redemption_count and record_sum == nominal_sum == budget
    lines.append(
        f"reconciliation: {records} issue records for {redemption_count} redemptions; records"
        f" {record_sum / 100:.2f} = redemptions {nominal_sum / 100:.2f} = budget spent {budget / 100:.2f}:"
        f" {'balanced' if balanced else 'NOT BALANCED'}"
    )
    if not balanced:
        doubled["records"] += 1

    unanswered = [op for op in ops if op.final != 201]
    existing_unanswered = [op for op in unanswered if redemptions.get(op.key)]
    lines.append(
        f"requests without a 201 at the end: {len(unanswered)} (final answers"
        f" {dict(Counter(op.final for op in unanswered))});"
        f" of them in the database: {len(existing_unanswered)}"
    )
    return Verdict(lost, doubled, lines)


def table(
    results: list[PhaseResult], ops: list[Operation], verdict: Verdict, answers: dict[str, Counter]
) -> str:
    """One row per phase: the redemptions started in it (requests, 201 at last, lost, doubled) and
    the attempts sent during it, retries of earlier redemptions included (attempts, 503, 500, other)."""
    by_phase: dict[str, list[Operation]] = defaultdict(list)
    for op in ops:
        by_phase[op.phase].append(op)
    head = (
        "| fault | requests | attempts | 201 | 503 | 500 | other errors | recovery s (API / SMS)"
        " | longest resend s | /readyz during | restarts | lost | doubled |"
    )
    out = [head, "|" + " --- |" * 13]

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    names = ["warm-up"] + [r.name for r in results] + list(by_phase)
    result_of = {r.name: r for r in results}
    for name in dict.fromkeys(names):
        phase_ops = by_phase.get(name, [])
        answered = answers.get(name, Counter())
        other = sum(v for k, v in answered.items() if k not in ("201", "503", "500"))
        other_detail = ", ".join(
            f"{k} {v}" for k, v in sorted(answered.items()) if k not in ("201", "503", "500")
        )
        r = result_of.get(name)
        if r and r.skipped:
            out.append(f"| {name} | not injected: {r.skipped} |" + " |" * 11)
            continue
        recovery = f"{fmt(r.api_back)} / {fmt(r.drained)}" if r and r.window else "-"
        every = (r.resend.at_once + r.resend.in_doubt) if r and r.resend else []
        resend = fmt(max(every)) if every else "-"
        out.append(
            f"| {name} | {len(phase_ops)} | {sum(answered.values())} |"
            f" {sum(1 for op in phase_ops if op.final == 201)} | {answered['503']} | {answered['500']} |"
            f" {other}{f' ({other_detail})' if other else ''} | {recovery} | {resend} |"
            f" {r.readyz if r else '-'} |"
            f" {r.restarts if r else 0} | {verdict.lost.get(name, 0)} | {verdict.doubled.get(name, 0)} |"
        )
    return "\n".join(out)


def notes(results: list[PhaseResult]) -> str:
    return "\n".join(
        f"- {r.name}: {r.window.note}"
        + (f"; SMS outstanding at the drop reached the SMSC: {r.resend}" if r.resend else "")
        for r in results
        if r.window and r.window.note
    )
