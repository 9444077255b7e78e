//! `agyn orgs`: organizations.

use agyn_client::organizations::{
    CreateOrganizationRequest, ListOrganizationsResponse, Organization,
};
use clap::{Args, Subcommand};

use crate::error::Result;
use crate::output::{self, Table};
use crate::resolve;
use crate::session::{GlobalArgs, Session};

#[derive(Args, Debug)]
pub struct OrgsArgs {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: OrgsCommand,
}

#[derive(Subcommand, Debug)]
pub enum OrgsCommand {
    /// Create an organization with you as its owner
    Create {
        /// Display name, 1 to 128 characters
        name: String,
        /// Slug (lowercase letters, digits and `-`); derived from the name
        /// when absent
        #[arg(long)]
        slug: Option<String>,
    },
    /// List the organizations you can see (cluster admins see all)
    List,
}

pub async fn run(args: OrgsArgs) -> Result<()> {
    let session = Session::open(&args.global)?;
    match args.command {
        OrgsCommand::Create { name, slug } => {
            let created = session
                .gateway
                .organizations()
                .create_organization(CreateOrganizationRequest {
                    name,
                    slug,
                    request_id: uuid::Uuid::new_v4().to_string(),
                    ..Default::default()
                })
                .await?
                .into_owned();
            if session.json {
                return output::print_json(&created);
            }
            print_table(created.organization.as_option().into_iter())
        }
        OrgsCommand::List => {
            let organizations = resolve::list_organizations(&session.gateway).await?;
            if session.json {
                return output::print_json(&ListOrganizationsResponse {
                    organizations,
                    ..Default::default()
                });
            }
            print_table(organizations.iter())
        }
    }
}

fn print_table<'a>(organizations: impl Iterator<Item = &'a Organization>) -> Result<()> {
    let mut table = Table::new(&["ID", "SLUG", "NAME", "STATE"]);
    for organization in organizations {
        table.row(vec![
            resolve::id_of(&organization.meta),
            organization.slug.clone(),
            organization.name.clone(),
            output::label(&organization.state, "ORGANIZATION_STATE_"),
        ]);
    }
    table.print_or("No organizations.")
}
