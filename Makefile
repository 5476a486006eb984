# Development and CI entry points for smtpstore. `make` alone lists them.
#
# Works as root on a fresh Debian machine that reaches only the npm registry
# and the Debian archive: Deno comes from npm, MariaDB from Debian.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.ONESHELL:
.DEFAULT_GOAL := help

# Deno 2 from PATH when there is one, else a copy installed from npm into the
# git-ignored .tools/ folder. `make DENO=/path/to/deno` overrides both.
TOOLS_DENO := .tools/node_modules/.bin/deno
ifndef DENO
DENO := $(shell d=$$(command -v deno) && v=$$("$$d" --version 2>/dev/null) \
	&& [[ $$v == "deno 2."* ]] && echo "$$d")
DENO := $(or $(DENO),$(TOOLS_DENO))
endif
DENO_PREREQ := $(if $(filter $(TOOLS_DENO),$(DENO)),$(TOOLS_DENO))

# The server reads .env through --env-file. Deno 2.9 only warns when the file
# is missing, so the flag is passed only when .env exists.
ENV_FILE := $(if $(wildcard .env),--env-file=.env)

.PHONY: help deno mysql start test check db build bundle bench

help: ## List the targets (the default)
	@echo "Usage: make TARGET [MYSQL_URL=mysql://user:pass@host:port/db]"
	echo
	awk -F ':.*## ' '/^[a-z]+:.*## / { printf "  %-6s %s\n", $$1, $$2 }' \
	  $(firstword $(MAKEFILE_LIST))
	echo
	echo "Deno: $(DENO)"

deno: $(DENO_PREREQ) ## Install Deno 2 into .tools/ unless PATH has one
	@echo "Using $(DENO): $$($(DENO) --version | head -n 1)"

$(TOOLS_DENO):
	@if ! command -v npm >/dev/null; then
	  echo "npm not found: installing it from Debian to fetch Deno"
	  apt-get update
	  DEBIAN_FRONTEND=noninteractive apt-get install -y \
	    --no-install-recommends npm ca-certificates
	fi
	echo "Installing Deno 2 from npm into .tools/"
	# The package's postinstall script points .bin/deno at the native binary
	# instead of a Node wrapper. Newer npm releases run it only when their
	# install-scripts policy allows the package, so it runs here instead.
	npm install --prefix .tools --no-save --no-audit --no-fund \
	  --ignore-scripts deno@2
	(cd .tools/node_modules/deno && node install.cjs)
	if ! $@ --version; then
	  rm -f $@
	  echo "make: $@ does not run; see the npm output above" >&2
	  exit 1
	fi

mysql: ## Start MariaDB for MYSQL_URL unless a server listens there
	@url=$${MYSQL_URL:-}
	# Like Deno's --env-file, the environment wins over .env.
	if [ -z "$$url" ] && [ -f .env ]; then
	  line=$$(grep -E '^\s*(export\s+)?MYSQL_URL\s*=' .env | head -n 1 || true)
	  url=$${line#*=}
	  url=$${url#"$${url%%[![:space:]]*}"}
	  case $$url in
	    \"*) url=$${url#\"}; url=$${url%%\"*} ;;
	    \'*) url=$${url#\'}; url=$${url%%\'*} ;;
	    *) url=$${url%%[[:space:]]*} ;;
	  esac
	fi
	url=$${url:-mysql://root@127.0.0.1:3306/smtpstore}
	case $$url in
	  mysql://*) ;;
	  *) echo "make mysql: MYSQL_URL is invalid: expected" \
	       "mysql://user:password@host:port/database" >&2
	     exit 1 ;;
	esac

	# mysql://user:pass@host:port/db, where host may be an [IPv6] literal.
	# The host follows the last @, since a password may hold / or @.
	hostport=$${url#*://}
	hostport=$${hostport##*@}
	hostport=$${hostport%%[/?]*}
	case $$hostport in
	  \[*) host=$${hostport#\[}; host=$${host%%]*}
	       port=$${hostport#*]}; port=$${port#:} ;;
	  *:*) host=$${hostport%:*}; port=$${hostport##*:} ;;
	  *) host=$$hostport; port= ;;
	esac
	host=$${host:-127.0.0.1}
	port=$${port:-3306}
	address=$$host:$$port
	if [[ $$host == *:* ]]; then address=[$$host]:$$port; fi
	listening() { timeout 2 bash -c ">/dev/tcp/$$host/$$port" 2>/dev/null; }
	if listening; then
	  echo "A server accepts connections on $$address"
	  exit 0
	fi

	case $$host in
	  127.0.0.1 | localhost | ::1) ;;
	  *)
	    echo "make mysql: nothing accepts connections on $$address, the" \
	      "server in MYSQL_URL; start it, or set MYSQL_URL to one that runs" >&2
	    exit 1 ;;
	esac
	if [ "$$(id -u)" != 0 ]; then
	  echo "make mysql: nothing listens on $$address, and installing" \
	    "or starting MariaDB needs root; run as root or start it yourself" >&2
	  exit 1
	fi

	if ! command -v mariadbd >/dev/null && [ ! -x /usr/sbin/mariadbd ]; then
	  echo "mariadbd not found: installing mariadb-server from Debian"
	  apt-get update
	  # In a container without an init system the package's postinstall
	  # script may fail to start the server, which apt-get reports as an
	  # error although mariadbd is installed; the steps below start it.
	  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y mariadb-server \
	      && [ ! -x /usr/sbin/mariadbd ]; then
	    echo "make mysql: installing mariadb-server failed" >&2
	    exit 1
	  fi
	fi
	mariadbd=$$(command -v mariadbd || echo /usr/sbin/mariadbd)

	# A second server on the same data directory would corrupt it, so a
	# running one that does not listen here points at a wrong port.
	if ! listening && command -v pgrep >/dev/null &&
	    { pgrep -x mariadbd || pgrep -x mysqld; } >/dev/null; then
	  echo "make mysql: a MariaDB server runs but nothing listens on" \
	    "$$address; check the host and port in MYSQL_URL" >&2
	  exit 1
	fi

	# The package's postinstall script may have started a server already.
	if ! listening; then
	  if [ ! -d /var/lib/mysql/mysql ]; then
	    mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
	  fi
	  mkdir -p /run/mysqld
	  chown mysql:mysql /run/mysqld
	  bind=127.0.0.1
	  if [ "$$host" = ::1 ]; then bind=::1; fi
	  mkdir -p .tools
	  log=$(CURDIR)/.tools/mariadbd.log
	  echo "Starting mariadbd on $$address, logging to $$log"
	  # setsid and nohup keep the server running after make and its
	  # terminal are gone, and Ctrl-C on `make start` does not reach it.
	  setsid nohup "$$mariadbd" --user=mysql --bind-address="$$bind" \
	    --port="$$port" </dev/null >>"$$log" 2>&1 &
	  pid=$$!
	  problem="(pid $$pid) did not listen on $$address within 60 s"
	  for _ in $$(seq 60); do
	    if listening; then problem=; break; fi
	    if ! kill -0 "$$pid" 2>/dev/null; then
	      problem="exited before it listened on $$address"
	      break
	    fi
	    sleep 1
	  done
	  if [ -n "$$problem" ]; then
	    echo "make mysql: mariadbd $$problem; the end of $$log follows:" >&2
	    tail -n 20 "$$log" >&2
	    exit 1
	  fi
	fi

	# Debian's MariaDB lets root in only through the Unix socket
	# (unix_socket authentication), and smtpstore connects over TCP.
	if ! mariadb --protocol=tcp -h "$$host" -P "$$port" -uroot \
	    -e 'SELECT 1' >/dev/null 2>&1; then
	  echo "Allowing root@localhost over TCP without a password"
	  if ! mariadb -uroot -e "ALTER USER root@localhost IDENTIFIED VIA \
	      mysql_native_password USING PASSWORD('') OR unix_socket"; then
	    echo "make mysql: changing root@localhost through the Unix socket" \
	      "failed; set MYSQL_URL to a user that can log in over TCP" >&2
	    exit 1
	  fi
	fi
	echo "MariaDB accepts connections on $$address"

start: mysql $(DENO_PREREQ) ## Run the server (reads .env when present)
	$(strip $(DENO) task -q $(ENV_FILE)) start

test: mysql $(DENO_PREREQ) ## Run all tests against the MySQL at MYSQL_URL
	$(strip $(DENO) test -A $(ENV_FILE))

check: $(DENO_PREREQ) ## Check formatting, lint and types
	$(DENO) fmt --check
	$(DENO) lint
	$(DENO) check main.ts

db: mysql $(DENO_PREREQ) ## Create the database and apply the schema
	$(strip $(DENO) run -A $(ENV_FILE)) main.ts schema

build: $(DENO_PREREQ) ## Compile the server into ./smtpstore
	@if ! $(DENO) task build; then
	  echo "make build: deno compile needs to download the denort runtime" \
	    "of this Deno version, so a failed download above means that its" \
	    "host is unreachable from here" >&2
	  exit 1
	fi

bundle: $(DENO_PREREQ) ## Bundle the server into ./smtpstore.js (no denort needed)
	$(DENO) bundle --platform deno -o smtpstore.js main.ts

bench: mysql $(DENO_PREREQ) ## Measure throughput against MYSQL_URL
	$(strip $(DENO) task $(ENV_FILE)) bench
