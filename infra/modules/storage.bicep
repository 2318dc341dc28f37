// The fleet's chaos store: a storage account whose blob container `chaos` holds what every replica
// of the app must agree on (heartbeats, the fleet-wide halt latch; see docs/fleet.md). The app
// reaches it with its managed identity only: shared-key access is disabled, so there is no account
// key to leak, and the identity gets "Storage Blob Data Contributor" on this one account.
//
// Reached over the account's public endpoint, not through the private-endpoint subnet: the network
// faults write their deny rules to that subnet's NSG, and they must never cut the store that the
// kill switch and the ledger rely on.

@description('Azure region.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Suffix that makes resource names unique.')
param resourceToken string

@description('Object id of the identity that reads and writes the store (the app identity).')
param appPrincipalId string

@description('Name of the blob container (the path of CHAOS_STORE_URL).')
param containerName string = 'chaos'

@description('Storage SKU.')
param skuName string = 'Standard_LRS'

// Built-in role "Storage Blob Data Contributor": read, write, delete and lease blobs.
var blobDataContributorRoleId = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // 3-24 lowercase letters and digits: 'stchaos' + the 13-character token.
  name: 'stchaos${resourceToken}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    // Entra ID only: no account keys, no account SAS (the emulator SAS of the tests is local).
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource container 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: containerName
  properties: {
    publicAccess: 'None'
  }
}

resource blobDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: storage
  name: guid(storage.id, appPrincipalId, blobDataContributorRoleId)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', blobDataContributorRoleId)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

output name string = storage.name
@description('The container URL the app reads as CHAOS_STORE_URL: https://<account>.blob.<storage suffix>/<container>.')
output containerUrl string = 'https://${storage.name}.blob.${environment().suffixes.storage}/${container.name}'
output blobDataContributorAssignmentId string = blobDataContributor.id
