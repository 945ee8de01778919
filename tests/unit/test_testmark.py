"""The mark on the console's test deliveries: signed with the source's secret over the
operator and the body, so a mark added to a captured body is ignored."""

from __future__ import annotations

from multidict import CIMultiDict

from router.testmark import SIGNATURE_HEADER, USER_HEADER, mark_headers, marked_by

OLD, NEW = b"old-secret", b"new-secret"
BODY = b'{"id": 1042}'


class TestMark:
    def test_a_mark_verifies_and_names_the_operator(self):
        """The mark the console adds names its operator, whatever the name's characters."""
        for user in ("ana", "Zoë Ünal", "a\r\nb"):
            headers = CIMultiDict(mark_headers([NEW], user, BODY))
            assert user == marked_by([NEW], headers, BODY)
            assert "\r" not in headers[USER_HEADER] and "\n" not in headers[USER_HEADER]

    def test_any_of_the_sources_secrets_verifies_it(self):
        """Secrets rotate: a mark signed with either of the source's secrets verifies."""
        assert "ana" == marked_by([OLD, NEW], mark_headers([NEW], "ana", BODY), BODY)
        assert "ana" == marked_by([OLD, NEW], mark_headers([OLD], "ana", BODY), BODY)

    def test_a_mark_not_signed_for_this_body_operator_or_secret_is_ignored(self):
        """Another body, another operator's name, another secret, a forged or missing
        signature: no mark (the delivery goes on as the provider's)."""
        mark = mark_headers([NEW], "ana", BODY)
        assert None is marked_by([NEW], mark, b'{"id": 1043}')
        assert None is marked_by([NEW], {**mark, USER_HEADER: "bo"}, BODY)
        assert None is marked_by([OLD], mark, BODY)
        assert None is marked_by([NEW], {**mark, SIGNATURE_HEADER: "0" * 64}, BODY)
        assert None is marked_by([NEW], {USER_HEADER: "ana"}, BODY)
        assert None is marked_by([NEW], {}, BODY)
        assert None is marked_by([NEW], {**mark, SIGNATURE_HEADER: "\udcff"}, BODY)
