"""PostgreSQL historian backend (psycopg 3); see ``docs/historian-postgres.md``."""
