"""Top-level URL map: the chat pages, sign in/out, admin and the ops endpoints."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from parley import ops

urlpatterns = [
    path("", include("chat.urls")),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("healthz", ops.healthz, name="healthz"),
    path("readyz", ops.readyz, name="readyz"),
    path("metrics", ops.metrics_endpoint, name="metrics"),
]
