"""HTTP routes: public trust files, health and metrics, attestation intake, admin API."""
