"""The command line is an interface: every command's help (its options, defaults and words)
stays what it was unless a change means to alter it (then the snapshot is rewritten and the
diff reviewed: tests/utils/snapshots.py)."""

from __future__ import annotations

from tests.utils.cli import help_texts
from tests.utils.snapshots import assert_matches_snapshot


def test_every_command_help_is_the_committed_one():
    assert_matches_snapshot(help_texts(), "cli_help.txt")
