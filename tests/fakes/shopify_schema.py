"""The part of Shopify's GraphQL Admin API schema (2025-10) the fake serves, as SDL.

Only what syncbridge reads, with the real names, types and arguments (checked against
shopify.dev): a query for a field that is not here fails validation, as it would at Shopify.
Enums the connector sends (sort keys, statuses) are real enums; enum-valued data the fake only
returns (currency codes, marketing states) is text, to keep test data short.
"""

from __future__ import annotations

CONNECTION_ARGS = "first: Int, after: String, last: Int, before: String, reverse: Boolean = false"


def _connection(name: str) -> str:
    return (
        f"type {name}Connection {{ edges: [{name}Edge!]! nodes: [{name}!]! pageInfo: PageInfo! }}\n"
        f"type {name}Edge {{ cursor: String! node: {name}! }}\n"
    )


SDL = (
    """
scalar DateTime
scalar URL
scalar Decimal
scalar UnsignedInt64

interface Node { id: ID! }

type PageInfo {
  hasNextPage: Boolean! hasPreviousPage: Boolean! startCursor: String endCursor: String
}
type MoneyV2 { amount: Decimal! currencyCode: String! }
type MoneyBag { shopMoney: MoneyV2! presentmentMoney: MoneyV2! }
type CustomerEmailAddress { emailAddress: String! marketingState: String! }
type CustomerPhoneNumber { phoneNumber: String! }
type CustomerEmailMarketingConsentState {
  marketingState: String! marketingOptInLevel: String consentUpdatedAt: DateTime
}
type MailingAddress {
  address1: String city: String company: String countryCodeV2: String province: String
  provinceCode: String zip: String
}

type Customer implements Node {
  id: ID! firstName: String lastName: String displayName: String!
  email: String @deprecated(reason: "Use `defaultEmailAddress.emailAddress` instead.")
  defaultEmailAddress: CustomerEmailAddress defaultPhoneNumber: CustomerPhoneNumber
  emailMarketingConsent: CustomerEmailMarketingConsentState
  amountSpent: MoneyV2! numberOfOrders: UnsignedInt64! tags: [String!]!
  createdAt: DateTime! updatedAt: DateTime! defaultAddress: MailingAddress
}
type Collection implements Node { id: ID! handle: String! title: String! updatedAt: DateTime! }
type ProductVariant implements Node { id: ID! title: String! sku: String }
type Product implements Node {
  id: ID! title: String! handle: String! productType: String! vendor: String! tags: [String!]!
  createdAt: DateTime! updatedAt: DateTime!
  collections("""
    + CONNECTION_ARGS
    + """): CollectionConnection!
}
type LineItem implements Node {
  id: ID! name: String! title: String! sku: String quantity: Int! vendor: String
  originalUnitPriceSet: MoneyBag! product: Product variant: ProductVariant
}
type Order implements Node {
  id: ID! name: String! email: String customer: Customer createdAt: DateTime! updatedAt: DateTime!
  processedAt: DateTime! cancelledAt: DateTime currencyCode: String!
  displayFinancialStatus: String displayFulfillmentStatus: String!
  totalPriceSet: MoneyBag! totalRefundedSet: MoneyBag!
  lineItems("""
    + CONNECTION_ARGS
    + """): LineItemConnection!
}
type AbandonedCheckoutLineItem implements Node {
  id: ID! title: String sku: String quantity: Int! variant: ProductVariant product: Product
  originalUnitPriceSet: MoneyBag!
}
type AbandonedCheckout implements Node {
  id: ID! name: String! abandonedCheckoutUrl: URL! completedAt: DateTime createdAt: DateTime!
  updatedAt: DateTime! customer: Customer totalPriceSet: MoneyBag!
  lineItems("""
    + CONNECTION_ARGS
    + """): AbandonedCheckoutLineItemConnection!
}
"""
    + "".join(
        _connection(n)
        for n in (
            "Customer",
            "Order",
            "LineItem",
            "AbandonedCheckout",
            "AbandonedCheckoutLineItem",
            "Product",
            "Collection",
        )
    )
    + """
enum CustomerSortKeys { CREATED_AT ID LOCATION NAME RELEVANCE UPDATED_AT }
enum OrderSortKeys {
  CREATED_AT CUSTOMER_NAME FINANCIAL_STATUS FULFILLMENT_STATUS ID ORDER_NUMBER PO_NUMBER
  PROCESSED_AT RELEVANCE TOTAL_ITEMS_QUANTITY TOTAL_PRICE UPDATED_AT
}
enum ProductSortKeys {
  CREATED_AT ID INVENTORY_TOTAL PRODUCT_TYPE PUBLISHED_AT RELEVANCE TITLE UPDATED_AT VENDOR
}
enum AbandonedCheckoutSortKeys { CHECKOUT_ID CREATED_AT CUSTOMER_NAME ID RELEVANCE TOTAL_PRICE }

enum BulkOperationStatus { CANCELED CANCELING COMPLETED CREATED EXPIRED FAILED RUNNING }
enum BulkOperationErrorCode { ACCESS_DENIED INTERNAL_SERVER_ERROR TIMEOUT }
enum BulkOperationType { MUTATION QUERY }
enum BulkOperationUserErrorCode { INVALID OPERATION_IN_PROGRESS }
type BulkOperation implements Node {
  id: ID! status: BulkOperationStatus! errorCode: BulkOperationErrorCode
  objectCount: UnsignedInt64! rootObjectCount: UnsignedInt64! fileSize: UnsignedInt64
  url: URL partialDataUrl: URL createdAt: DateTime! completedAt: DateTime query: String!
  type: BulkOperationType!
}
type BulkOperationUserError { code: BulkOperationUserErrorCode field: [String!] message: String! }
type BulkOperationRunQueryPayload {
  bulkOperation: BulkOperation userErrors: [BulkOperationUserError!]!
}
type Shop { name: String! myshopifyDomain: String! }

type QueryRoot {
  customers("""
    + CONNECTION_ARGS
    + """, sortKey: CustomerSortKeys = ID, query: String): CustomerConnection!
  orders("""
    + CONNECTION_ARGS
    + """, sortKey: OrderSortKeys = PROCESSED_AT, query: String): OrderConnection!
  abandonedCheckouts("""
    + CONNECTION_ARGS
    + """, sortKey: AbandonedCheckoutSortKeys = ID, query: String):
    AbandonedCheckoutConnection!
  products("""
    + CONNECTION_ARGS
    + """, sortKey: ProductSortKeys = ID, query: String): ProductConnection!
  node(id: ID!): Node
  nodes(ids: [ID!]!): [Node]!
  currentBulkOperation(type: BulkOperationType = QUERY): BulkOperation
  shop: Shop!
}
type Mutation {
  bulkOperationRunQuery(query: String!, groupObjects: Boolean! = true): BulkOperationRunQueryPayload
}
schema { query: QueryRoot mutation: Mutation }
"""
)

ROOT_CONNECTIONS = {
    "customers": "Customer",
    "orders": "Order",
    "abandonedCheckouts": "AbandonedCheckout",
    "products": "Product",
}
"""QueryRoot connection -> the GID type of its nodes."""
