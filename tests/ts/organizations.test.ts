// End-to-end tests of OrganizationsGateway against a real `agyn serve`
// through the generated TypeScript client, over every transport of the
// public listener, and once over TLS on the same port.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";

import {
  MembershipRole,
  MembershipStatus,
  OrganizationState,
  OrganizationsGateway,
} from "../../gen/ts/agynio/api/organizations/v1/organizations_pb.js";
import { UsersGateway } from "../../gen/ts/agynio/api/users/v1/users_pb.js";
import { type AgynServer, startServer } from "./server.js";

const transports: { name: string; create(baseUrl: string): Transport }[] = [
  {
    name: "Connect JSON",
    create: (baseUrl) =>
      createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: false }),
  },
  {
    name: "Connect binary over HTTP/2",
    create: (baseUrl) =>
      createConnectTransport({ baseUrl, httpVersion: "2", useBinaryFormat: true }),
  },
  { name: "gRPC", create: (baseUrl) => createGrpcTransport({ baseUrl }) },
  {
    name: "gRPC-Web",
    create: (baseUrl) => createGrpcWebTransport({ baseUrl, httpVersion: "1.1" }),
  },
];

function bearer(token: string): { headers: Record<string, string> } {
  return { headers: { Authorization: `Bearer ${token}` } };
}

async function callError(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (err) {
    return ConnectError.from(err);
  }
  assert.fail("expected the call to fail, but it succeeded");
}

describe("OrganizationsGateway end to end", () => {
  let server: AgynServer;

  before(async () => {
    server = await startServer();
  });

  after(async () => {
    await server?.stop();
  });

  for (const transport of transports) {
    test(`organization lifecycle over ${transport.name}`, async () => {
      const orgs = createClient(OrganizationsGateway, transport.create(server.origin));
      const admin = bearer(server.adminToken);
      const name = `Acme ${transport.name}`;

      const created = await orgs.createOrganization({ name }, admin);
      const org = created.organization;
      assert.ok(org?.meta, "CreateOrganization returned no organization");
      assert.equal(org.name, name);
      assert.match(org.slug, /^acme-/);
      assert.equal(org.state, OrganizationState.ACTIVE);

      const fetched = await orgs.getOrganization({ id: org.meta.id }, admin);
      assert.equal(fetched.organization?.slug, org.slug);

      const members = await orgs.listMembers({ organizationId: org.meta.id }, admin);
      assert.equal(members.memberships.length, 1);
      assert.equal(members.memberships[0].role, MembershipRole.OWNER);
      assert.equal(members.memberships[0].status, MembershipStatus.ACTIVE);
      assert.equal(members.memberships[0].username, "admin");

      const renamed = await orgs.updateOrganization(
        { id: org.meta.id, slug: `${org.slug}-renamed` },
        admin,
      );
      assert.equal(renamed.organization?.slug, `${org.slug}-renamed`);

      const taken = await callError(
        orgs.createOrganization({ name: "Copy", slug: `${org.slug}-renamed` }, admin),
      );
      assert.equal(taken.code, Code.AlreadyExists, taken.rawMessage);
      const invalid = await callError(orgs.createOrganization({ name: "x", slug: "Bad_Slug" }, admin));
      assert.equal(invalid.code, Code.InvalidArgument, invalid.rawMessage);

      const last = await callError(
        orgs.removeMembership({ id: members.memberships[0].meta?.id ?? "" }, admin),
      );
      assert.equal(last.code, Code.FailedPrecondition, last.rawMessage);
      assert.equal(last.rawMessage, "cannot remove the last owner");

      await orgs.deleteOrganization({ id: org.meta.id }, admin);
      const mine = await orgs.listMyMemberships({}, admin);
      assert.ok(
        !mine.memberships.some((membership) => membership.organizationId === org.meta?.id),
        "a deleted organization is still in ListMyMemberships",
      );
    });
  }

  test("anonymous callers are unauthenticated", async () => {
    const orgs = createClient(OrganizationsGateway, transports[0].create(server.origin));
    const err = await callError(orgs.listOrganizations({}));
    assert.equal(err.code, Code.Unauthenticated);
  });

  test("TLS on the public port, trusting the platform CA", async () => {
    const users = createClient(
      UsersGateway,
      createConnectTransport({
        baseUrl: server.tlsOrigin,
        httpVersion: "2",
        nodeOptions: { ca: server.caPem },
      }),
    );
    const me = await users.getMe({}, bearer(server.adminToken));
    assert.equal(me.user?.username, "admin");
  });
});
