//! Simulators of the outside systems for tests, benchmarks and the demo: HubSpot over HTTP and
//! SQL Server over TDS, so production client code runs unchanged against them.
