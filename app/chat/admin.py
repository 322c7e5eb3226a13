from django.contrib import admin

from chat.models import Conversation, DailyUsage, Message, ProviderCheck, ProviderModel


class MessageInline(admin.TabularInline):
    model = Message
    fields = ("role", "status", "model", "content", "completion_tokens", "superseded_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ("__str__", "user", "model", "updated_at")
    list_filter = ("model",)
    search_fields = ("title", "user__username")
    inlines = [MessageInline]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("id", "conversation", "role", "status", "model", "created_at")
    list_filter = ("role", "status", "model")
    raw_id_fields = ("conversation", "reply_to")


@admin.register(DailyUsage)
class DailyUsageAdmin(admin.ModelAdmin):
    list_display = (
        "day", "user", "model", "requests", "errors", "cancelled", "prompt_tokens",
        "completion_tokens", "ttft_p50_ms", "ttft_p95_ms", "duration_p50_ms", "duration_p95_ms",
    )  # fmt: skip
    list_filter = ("day", "model")
    date_hierarchy = "day"
    search_fields = ("user__username",)


@admin.register(ProviderModel)
class ProviderModelAdmin(admin.ModelAdmin):
    list_display = ("provider", "name", "available", "last_seen_at")
    list_filter = ("provider", "available")


@admin.register(ProviderCheck)
class ProviderCheckAdmin(admin.ModelAdmin):
    list_display = ("provider", "checked_at", "ok", "latency_ms", "model_count", "error")
    list_filter = ("provider", "ok")
