"""Maintenances of stations, spots and vehicles (issue 13)."""
