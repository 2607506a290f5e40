"""Code shared by the pipeline Lambdas: settings, AWS clients, the audit record and the notification.

Every function imports from here so the record and the email are written in exactly one place.
"""
