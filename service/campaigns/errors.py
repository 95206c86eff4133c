"""Refusals of a campaign's moves and uploads."""

from __future__ import annotations

from service.kit.http.errors import Problem


class CampaignNotFound(Problem):
    status, code, title = 404, "not_found", "Not found"


class NotADraft(Problem):
    status, code, title = 409, "campaign_not_draft", "Campaign is not a draft"


class WrongState(Problem):
    status, code, title = 409, "campaign_state", "Not allowed in the campaign's state"


class NotValidated(Problem):
    status, code, title = 409, "campaign_not_valid", "Campaign lines not valid"


class SamePerson(Problem):
    status, code, title = 403, "same_person", "The submitter may not approve"


class UnknownPerson(Problem):
    status, code, title = 403, "approver_not_identified", "The key has no owner"


class SnapshotChanged(Problem):
    status, code, title = 409, "campaign_changed", "Campaign changed since it was read"


class UploadRefused(Problem):
    """The file as a whole cannot be read; `reason` says why (empty_file, header_only, unknown_format,
    unreadable_file, missing_phone_column, too_many_lines, too_large)."""

    status, code, title = 422, "upload_refused", "File refused"
