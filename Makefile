# Stop Press: `make run` for a local newsroom, `make test` for the whole suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench bench-digest bench-signup chaos lint check-deploy clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

## run: migrate, create a local admin, start web + Celery worker + beat (PORT, default 8000)
run: $(STAMP)
	bash scripts/run-dev

## test: the whole suite against the real PostgreSQL and Redis
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

## bench: fan-out benchmark (100,000 subscribers through real workers and a fake Mailgun)
bench: $(STAMP)
	$(PY) bench/fanout.py $(BENCH_ARGS)

## bench-signup: the signup endpoint under a spike against a bare view, same gunicorn (SIGNUP_ARGS, e.g. --redis-outage 60)
bench-signup: $(STAMP)
	$(PY) bench/signup.py $(SIGNUP_ARGS)

## chaos: one fault per scenario through worker, beat, fake Mailgun, PostgreSQL and Redis (CHAOS_ARGS, e.g. --scenario kill-worker)
chaos: $(STAMP)
	$(PY) bench/chaos.py $(CHAOS_ARGS)

## lint: ruff, and the import contract in .importlinter (imports go one way, down the layers)
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache

check-deploy: $(STAMP)
	SECRET_KEY=$$(head -c 48 /dev/urandom | base64) EMAIL_HASH_KEY=x ALLOWED_HOSTS=news.example.com \
	SITE_URL=https://news.example.com ANYMAIL_WEBHOOK_SECRET=u:p MAILGUN_WEBHOOK_SIGNING_KEY=k \
	$(PY) manage.py check --deploy --fail-level WARNING

clean:
	rm -rf $(VENV) var staticfiles db.sqlite3
