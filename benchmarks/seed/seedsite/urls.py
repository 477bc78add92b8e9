from django.urls import path, re_path

from readings import views

urlpatterns = [
    path("healthz", views.healthz),
    re_path(r"^api/nodes/(?P<name>[A-Za-z0-9_.-]{1,64})/?$", views.NodeReading.as_view()),
]
