from django.conf import settings
from django.db import models


class Node(models.Model):
    """A sensor node: its login is a Django user of the same name; created by its first POST."""
    name = models.CharField(max_length=64, unique=True)
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    created_at = models.DateTimeField(auto_now_add=True)


class Reading(models.Model):
    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="readings")
    time = models.DateTimeField(auto_now_add=True, db_index=True)
    temperature = models.FloatField()
    humidity = models.FloatField()
