"""Running the service: configuration, database and migrations, payload codec, logs and metrics,
histories, sealing and erasure, the audit log and API keys, the embedded services, the Temporal
connection, journey versions."""
