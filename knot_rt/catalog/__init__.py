"""The catalog: networks, clusters, parkings, speed zones, vehicles' static facts, discounts and countries."""
