"""The hostile-media suite: the mutation corpus size (`--fuzz-corpus N`, else the CI size) and its time budget."""
from __future__ import annotations

import pytest

from fixtures.mutations import CI_SIZE


def pytest_collection_modifyitems(config, items):
    # the corpus test's budget grows with --fuzz-corpus (about 0.2 s a file here; pyproject's default is 300 s)
    seconds = 600 + int((config.getoption("--fuzz-corpus") or CI_SIZE) * 1.0)
    for item in items:
        if item.get_closest_marker("slow") and "hostile" in item.nodeid:
            item.add_marker(pytest.mark.timeout(seconds))


@pytest.fixture
def fuzz_corpus_size(request) -> int:
    return request.config.getoption("--fuzz-corpus") or CI_SIZE
