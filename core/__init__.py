"""Foundations every package may use: settings types, durations, the telemetry schema and stores, the model
registry, Ray names and named-actor calls. Imports none of app, deployments, training, collectors, autoscaler."""
