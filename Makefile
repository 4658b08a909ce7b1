# Top-level build and test.  Each part has its own Makefile; this one only sequences them.
# Every part builds and tests with the project's own interpreter, never whatever python3 is on PATH.
PYTHON ?= $(CURDIR)/.venv/bin/python
export PYTHON
PARTS := smm smm/app emulation emulation/native guest/linux

.PHONY: build uptodate test check-native lint pytest clean

build:
	@for part in $(PARTS); do \
	  if [ -f $$part/Makefile ]; then $(MAKE) -s -C $$part || exit 1; fi; \
	done

# Exit status 0 when every part is built and up to date (scripts/bootstrap.sh stays quiet then).
uptodate:
	@for part in $(PARTS); do \
	  if [ -f $$part/Makefile ]; then $(MAKE) -s -q -C $$part || exit 1; fi; \
	done

check-native: build
	$(MAKE) -s -C smm check

lint:
	$(PYTHON) -m ruff check host emulation tests scripts
	$(PYTHON) -m ruff format --check host emulation tests scripts

pytest: build
	$(PYTHON) -m pytest -q

test: check-native lint pytest

clean:
	rm -rf smm/build emulation/build guest/build
