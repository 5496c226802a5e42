"""Stations: the socket gateway, their persistence, and their administration."""
