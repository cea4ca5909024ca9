#!/bin/sh
# The portal's database role and database, made by the one-shot compose service db-init as
# the superuser, on every `docker compose up` (idempotent; a changed db_password is applied).
# The role is not a superuser and cannot create roles or databases: the portal only needs its
# own database. (The local `make test` role has CREATEDB for pytest's test database; a
# production database needs none.)
set -eu
export PGHOST=postgres PGUSER=postgres PGDATABASE=postgres
PGPASSWORD=$(cat /run/secrets/pg_superuser_password)
export PGPASSWORD
psql -X -q -v ON_ERROR_STOP=1 -v pw="$(cat /run/secrets/db_password)" <<'SQL'
SELECT 'CREATE ROLE portal LOGIN'
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'portal') \gexec
ALTER ROLE portal LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS PASSWORD :'pw';
SELECT 'CREATE DATABASE portal OWNER portal'
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'portal') \gexec
SQL
echo "db-init: role portal (not a superuser) and database portal ready"
