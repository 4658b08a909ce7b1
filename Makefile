# Top-level build and test.  Each part has its own Makefile; this one only sequences them.
# Every part builds and tests with the project's own interpreter, never whatever python3 is on PATH.
PYTHON ?= $(CURDIR)/.venv/bin/python
export PYTHON
PARTS := smm smm/app emulation emulation/native guest/linux

.PHONY: build test check-native lint pytest clean

build:
	@for part in $(PARTS); do \
	  if [ -f $$part/Makefile ]; then $(MAKE) -s -C $$part || exit 1; fi; \
	done

check-native: build
	$(MAKE) -s -C smm check

lint:
	ruff check host emulation tests scripts
	ruff format --check host emulation tests scripts

pytest: build
	$(PYTHON) -m pytest -q

test: check-native lint pytest

clean:
	rm -rf smm/build emulation/build guest/build
