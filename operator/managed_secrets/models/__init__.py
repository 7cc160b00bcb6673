"""Typed models of the custom resources; parsing happens at the boundary (see ``parse``)."""
