"""The emulators' GraphQL reader: which operation is asked, its variables' declared types,
fields with aliases and arguments, and what it refuses."""

from __future__ import annotations

import pytest

from emulators.graphql import GraphQLError, Var, parse, requested_cost

DOCUMENT = """
# two operations: the name picks one
query StorefrontOrder($id: ID!) {
  order(id: $id) { id fulfillments(first: 5) { trackingInfo(first: 10) { number } } }
}
mutation StorefrontFulfil($fulfillment: FulfillmentInput!, $message: String = "hi") {
  created: fulfillmentCreate(fulfillment: $fulfillment, message: $message) {
    userErrors { field message }
  }
}
"""


class TestParse:
    def test_the_named_operation(self):
        """operationName picks the operation; its variables keep their declared types."""
        operation = parse(DOCUMENT, "StorefrontFulfil")
        assert ("mutation", "StorefrontFulfil") == (operation.kind, operation.name)
        assert {"fulfillment": "FulfillmentInput!", "message": "String"} == operation.variables
        [root] = operation.selections
        assert ("fulfillmentCreate", "created") == (root.name, root.alias)
        assert {"fulfillment": Var("fulfillment"), "message": Var("message")} == root.arguments

    def test_anonymous_query_with_literals(self):
        operation = parse('{ order(id: "gid://shopify/Order/1") { id } }', None)
        assert "query" == operation.kind
        assert {"id": "gid://shopify/Order/1"} == operation.selections[0].arguments

    def test_cost(self):
        """Mutations cost 10; a query 1 plus 2 + first per paginated field."""
        assert 10 == requested_cost(parse(DOCUMENT, "StorefrontFulfil"))
        assert 1 + 7 + 12 == requested_cost(parse(DOCUMENT, "StorefrontOrder"))

    @pytest.mark.parametrize(("document", "name"), [
        (DOCUMENT, None),                       # two operations, none named
        (DOCUMENT, "Other"),                    # no such operation
        ("{ order { id }", None),               # unclosed
        ("{ }", None),                          # empty selection
        ("{ ...F }", None),                     # fragments are not emulated
        ('{ a(x: """block""") { id } }', None),  # nor block strings
        ("subscription { a }", None),
        ("", None),
    ])
    def test_refused(self, document, name):
        with pytest.raises(GraphQLError):
            parse(document, name)
