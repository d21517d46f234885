"""The e2e suite of cks-lab (e2e/README.md): whole flows against the platform as the chart wires it."""
