"""The Kubernetes edge: the core's ports implemented with the official client; ApiException ends here."""
