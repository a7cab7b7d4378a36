"""Deployment beyond one process: the team's tracking services and the DAG on Airflow."""
