//! Shared test helpers: the throwaway PostgreSQL cluster and per-test databases.
