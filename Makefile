# Osprey: the two commands are `make run` and `make test`.
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: run test deps build build-release lint fmt bench clean

## run: a coordinator, one local agent, and the example pipeline with live logs
run: deps build-release
	./scripts/run-demo.sh

## test: unit, integration and Docker tests (installs what they need)
test: deps build
	$(CARGO) test --workspace --all-targets
	# The pipeline, restart (kill -9), log, artifact, cache and project tests again, on
	# PostgreSQL with artifacts and caches in an S3 bucket.
	OSPREY_TEST_STORE=postgres OSPREY_TEST_ARTIFACTS=s3 $(CARGO) test -p osprey-integration-tests \
		--test stages --test recovery --test logs --test artifacts --test cache --test projects

## lint: formatting and clippy, as CI checks them
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## bench: dispatch latency, throughput and executor overhead, on SQLite then PostgreSQL; figures in bench-results/
bench: deps build-release
	$(CARGO) run --release -p osprey-integration-tests --bin osprey-bench -- --out bench-results/latest.txt
	OSPREY_TEST_STORE=postgres $(CARGO) run --release -p osprey-integration-tests --bin osprey-bench -- --out bench-results/postgres.txt

## deps: system packages and test images a fresh machine lacks
deps:
	./scripts/install-deps.sh

build:
	$(CARGO) build --workspace --bins

build-release:
	$(CARGO) build --release --workspace --bins

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -rf .osprey-run bench-results
