"""Screens pushed over the wizard: override confirmation, auth flow, resume offer, final report."""
