"""`make mutation` (tests/mutation.py) stays runnable: every edit it makes still applies to the
code as it is, so a moved line fails here rather than silently in the mutation run."""

from __future__ import annotations

import pytest

from mutation import MUTATIONS, ROOT, Mutation


@pytest.mark.parametrize("m", MUTATIONS, ids=lambda m: m.name)
def test_each_mutation_applies_once_and_names_existing_tests(m: Mutation) -> None:
    assert (ROOT / m.path).read_text().count(m.old) == 1, f"update the snippet of {m.name} in tests/mutation.py"
    for test in m.tests:
        assert (ROOT / test.split("::")[0]).is_file(), test
