# The two entry points the README promises. Both install what they need first.
PYTHON ?= python3
APT_PACKAGES = tshark frr bird2 iproute2 iputils-ping

.PHONY: install demo test test-labs bench clean

install:
	./scripts/install-deps $(APT_PACKAGES)
	$(PYTHON) -m pip install -q -e '.[test]'

demo: install
	$(PYTHON) -m alt_router.cli demo

test: install
	$(PYTHON) -m ruff check alt_router tests bench
	$(PYTHON) -m mypy
	$(PYTHON) -m pytest

# The namespace tests one file at a time (each builds its own lab and starts daemons): on a small
# machine that is gentler than one pytest over both directories, and a failure names its file.
test-labs: install
	for f in tests/lab/test_*.py tests/integration/test_*.py; do \
		$(PYTHON) -m pytest -q -p no:cacheprovider $$f || exit 1; done

bench: install
	for b in bench/*.py; do $(PYTHON) $$b || exit 1; done

clean:
	rm -rf build *.egg-info .mypy_cache .pytest_cache .ruff_cache .hypothesis
