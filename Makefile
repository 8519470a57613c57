# The two entry points the README promises. Both install what they need first.
PYTHON ?= python3
APT_PACKAGES = tshark frr bird2 iproute2 iputils-ping

.PHONY: install demo test bench clean

install:
	./scripts/install-deps $(APT_PACKAGES)
	$(PYTHON) -m pip install -q -e '.[test]'

demo: install
	$(PYTHON) -m alt_router.cli demo

test: install
	$(PYTHON) -m ruff check alt_router tests bench
	$(PYTHON) -m mypy
	$(PYTHON) -m pytest

bench: install
	for b in bench/*.py; do $(PYTHON) $$b || exit 1; done

clean:
	rm -rf build *.egg-info .mypy_cache .pytest_cache .ruff_cache .hypothesis
