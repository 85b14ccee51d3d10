"""The Airflow layer, grouped as Airflow's providers group theirs: hooks (connections -> clients),
operators and sensors (the four stages), triggers (the deferred wait), links, notifiers, the
listener that cancels a job when its wait is marked by hand, and the status page (a FastAPI app
the plugin mounts). Everything here may import Airflow; the domain modules it calls may not."""
