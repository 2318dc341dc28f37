// The user-assigned managed identity the container app (and the load generator job) runs as.
// Its rights are granted where the resources live: AcrPull in registry.bicep, the Redis access
// policy in redis.bicep, Storage Blob Data Contributor on the chaos store in storage.bicep, the NSG
// and revision rights in permissions.bicep.

@description('Azure region.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Suffix that makes resource names unique.')
param resourceToken string

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-chaos-${resourceToken}'
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output clientId string = identity.properties.clientId
@description('Object id of the identity: the Redis username and the principal of role assignments.')
output principalId string = identity.properties.principalId
