//! The provenance database (SQLite): schema, migrations, queries.
