"""The faults bench's table: the SMSC-drop row shows the longest delay from the drop until an SMS
outstanding at it reached the SMSC, and its note the split (not yet written / in doubt)."""

from __future__ import annotations

from collections import Counter

from tests.harness.faults import PhaseResult, Resends, Window
from tests.harness.verdict import Verdict, notes, table


def test_the_smsc_drop_row_shows_the_longest_resend_and_its_note_the_split():
    drop = PhaseResult(
        "smsc drops mid-window",
        Window(0.0, 1.0, "16 submit_sm held"),
        0.0,
        31.5,
        "200",
        resend=Resends(at_once=[0.12, 0.31], in_doubt=[30.1, 30.24], held=16, taken=8),
    )
    other = PhaseResult("baseline", Window(0.0, 10.0, "steady load"), 0.2, 1.1, "200")
    rows = table([other, drop], [], Verdict(Counter(), Counter(), []), {}).splitlines()
    header = [c.strip() for c in rows[0].split("|")]
    column = header.index("longest resend s")
    cells = {r.split("|")[1].strip(): [c.strip() for c in r.split("|")] for r in rows[2:]}
    assert cells["smsc drops mid-window"][column] == "30.2" and cells["baseline"][column] == "-"
    assert (
        "not yet written: 2, within 0.3 s; written, never answered (in doubt): 2, after 30.1-30.2 s"
        in notes([other, drop])
    )
