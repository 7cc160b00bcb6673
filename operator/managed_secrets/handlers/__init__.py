"""The only package that imports Kopf: thin glue from watch events to the runtime's controller."""
